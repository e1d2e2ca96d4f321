#!/usr/bin/env bash
# The GPU work left by sessions without a device (BENCHMARKS.md, "GPU test status"), in steps that fit one
# device call each (10 min). Results go to $OUT, one file per step.
# Usage on the GPU machine (deps installed, PYTHONPATH set): bash tests/bench/gpu_pending.sh STEP [STEP ...]
#   tests        the gpu-marked tests of every kernel (about 250 s; 6 processes if pytest-xdist is there)
#   moe-split    the mma path's first-GEMM K split (SPLIT_K 1 / 2 / 4) at the best tiles (moe_mma_variants.py)
#   mla-combine  FlashMLA's two-pass combine against the online merge it replaced (mla_combine_ab.py)
#   moe-table    the MoE table (bench_mxfp4_moe.py, every M and path): configs screened with 3 replays
#                (likeliest first, within the budget), each row's shortlist with PDL / DOWN_TILES re-timed with 10
#                (never run whole: the screen times about 1.5 configs a second, so 180 s covers ~270 of 1,550)
#   moe-decode   the decode rows of that table only (M = 1, 8, 32; gemv and mma paths; 883 configs; run at
#                22:04 UTC with a 150 s screen: 93 s precompile, 14-55 configs screened per row, 315 s in all)
#   mla-table    the FlashMLA table (bench_flash_mla.py 80)
#   mla-floor    FlashMLA's floor: the best pure gather of the kernel's bytes in 1 launch and followed by a
#                dependent one, V3.2 and V4-Flash TP 8 at B = 1-256, next to the runtime default (bench_mla_floor.py;
#                never run: is V4-Flash B = 64's 50% reachable?)
#   moe-floor    the MoE decode floor: a pure read of the active experts' bytes in 1 and 2 launches, and the
#                launch floor of 1-4 empty kernels (bench_moe_floor.py, about 90 s)
#   pdl-tests    the GPU tests of programmatic dependent launch alone (tests/test_pdl.py, config PDL)
#   pdl-ab       PDL 0 / 1: launch-chain floor, MoE decode shapes, FlashMLA splits (pdl_ab.py, about 70 s)
#   pdl-tuned    PDL 0 / 1 at the H100 tables' tuned config of each decode row (pdl_ab.py tuned)
#   moe-times    each launch's device time in the MoE decode rows at their tuned configs (moe_kernel_times.py)
#   down-tiles   the mma path's second GEMM with 1-8 row tiles per program (config DOWN_TILES, moe_down_tiles_ab.py)
#   down-tests   the GPU tests of DOWN_TILES (tests/test_mxfp4_moe.py -k down_tiles)
#   moe-probe    gpt-oss M = 8 / 32 launch by launch next to K = I = 3072 and DeepSeek's activation (moe_kernel_times.py --probe)
#   mla-h8-tests the GPU tests of FlashMLA's mma path, both head tilings (tests/test_flash_mla.py -k mma_path)
#   mla-defer    the same at B = 64 and 256, 2 rounds, with a column for mla_defer_pv.patch (each tile's PV
#                in the next step; never run)
#   mla-h8       FlashMLA's mma path at V4-Flash TP 8: 16 head rows against 8 heads as the MMA's N (mla_h8_ab.py)
#   moe-padded   the GPU tests of weights and scales with padded rows (test_mxfp4_moe.py -k padded; never run:
#                the twenty-third session's device time was spent)
#   moe-prefetch gpt-oss's partial span prefetched to L2 at each program's start (moe_tail_prefetch.patch: one
#                prefetch.global.L2 per weight row, both GEMMs; compiled on the CPU host only, registers 164-168 as
#                before, step loops unchanged) against the landed kernels (moe_mma_file_ab.py; never run)
#   moe-align    gpt-oss M = 8 / 32 launch by launch with its weights as given and on a 128-byte row pitch
#                (moe_kernel_times.py --align; run in the twenty-third session)
#   mla-ring-tests the GPU tests of FlashMLA's mma path with the shared-memory ring (H_TILE 8, num_stages 3)
#   mla-ring     H_TILE 8's register loop against its shared-memory ring, V4-Flash TP 8 (mla_h8_ab.py --ring)
#   mla-fused-tests the GPU tests of FlashMLA's mma path with COMBINE "fused" and its tickets (test_flash_mla.py)
#   mla-fused    COMBINE "launch" (combine kernel, PDL) against "fused" (last split program merges), V4-Flash and
#                V3.2 TP 8 at B = 1-256 (mla_fused_ab.py, about 200 s)
set -u
out=${OUT:-/tmp/aotune-gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
root=$(pwd)
date -u | tee "$out/date.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$out/date.txt"
for step in "$@"; do
  echo "== $step $(date -u +%T)"
  case "$step" in
    tests) xdist=$(python3 -c 'import xdist' 2>/dev/null && echo "-n 6")  # pack-deps.sh ... pytest-xdist
           AOTUNE_TEST_DEVICE=cuda timeout 300 python3 -m pytest -m gpu -q -p no:cacheprovider $xdist tests 2>&1 \
             | tail -25 | tee "$out/gpu_tests.txt" ;;
    moe-split) timeout 400 python3 tests/bench/moe_mma_variants.py split 2>&1 | tee "$out/moe_split.txt" ;;
    mla-combine) (cd tests/bench && timeout 300 python3 mla_combine_ab.py) 2>&1 | tee "$out/mla_combine.txt" ;;
    moe-table) timeout 540 python3 tests/bench/bench_mxfp4_moe.py --reps 10 --budget-s 180 --json "$out/moe.json" 2>&1 \
                 | grep -v '^{' | tee "$out/moe_table.txt" ;;
    moe-decode) timeout 560 python3 tests/bench/bench_mxfp4_moe.py --tokens 1,8,32 --paths gemv,mma --reps 10 \
                  --budget-s 330 --json "$out/moe_decode.json" 2>&1 | grep -v '^{' | tee "$out/moe_decode.txt" ;;
    moe-floor) timeout 200 python3 tests/bench/bench_moe_floor.py 2>&1 | tee "$out/moe_floor.txt" ;;
    pdl-tests) AOTUNE_TEST_DEVICE=cuda timeout 200 python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_pdl.py \
                 2>&1 | tail -15 | tee "$out/pdl_tests.txt" ;;
    pdl-ab) (cd tests/bench && timeout 400 python3 pdl_ab.py) 2>&1 | tee "$out/pdl_ab.txt" ;;
    pdl-tuned) (cd tests/bench && timeout 300 python3 pdl_ab.py floor tuned) 2>&1 | tee "$out/pdl_tuned.txt" ;;
    moe-times) timeout 200 python3 tests/bench/moe_kernel_times.py 2>&1 | tee "$out/moe_times.txt" ;;
    moe-probe) timeout 200 python3 tests/bench/moe_kernel_times.py --probe 2>&1 | tee "$out/moe_probe.txt" ;;
    down-tiles) timeout 300 python3 tests/bench/moe_down_tiles_ab.py 2>&1 | tee "$out/down_tiles.txt" ;;
    down-tests) AOTUNE_TEST_DEVICE=cuda timeout 200 python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_mxfp4_moe.py \
                  -k "down_tiles or graph_replay" 2>&1 | tail -25 | tee "$out/down_tests.txt" ;;
    mla-h8-tests) xdist=$(python3 -c "import xdist" 2>/dev/null && echo "-n 6")
                  AOTUNE_TEST_DEVICE=cuda timeout 200 python3 -m pytest -m gpu -q -p no:cacheprovider $xdist \
                    tests/test_flash_mla.py -k "mma_path or runtime_default" 2>&1 | tail -25 | tee "$out/mla_h8_tests.txt" ;;
    mla-h8) (cd tests/bench && timeout 300 python3 mla_h8_ab.py) 2>&1 | tee "$out/mla_h8.txt" ;;
    mla-defer) patch -s -o /tmp/mla_mma8_defer.py kernels/_mla_mma8.py tests/bench/mla_defer_pv.patch &&
               (cd tests/bench && timeout 200 python3 mla_h8_ab.py --batches 64,256 --rounds 2 \
                  --variant /tmp/mla_mma8_defer.py) 2>&1 | tee "$out/mla_defer.txt" ;;
    moe-padded) AOTUNE_TEST_DEVICE=cuda timeout 200 python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_mxfp4_moe.py \
                  -k padded 2>&1 | tail -15 | tee "$out/moe_padded.txt" ;;
    moe-prefetch) patch -s -o /tmp/_moe_mma_prefetch.py kernels/_moe_mma.py tests/bench/moe_tail_prefetch.patch &&
                  timeout 300 python3 tests/bench/moe_mma_file_ab.py main=main prefetch=/tmp/_moe_mma_prefetch.py 2>&1 \
                    | tee "$out/moe_prefetch.txt" ;;
    moe-align) timeout 200 python3 tests/bench/moe_kernel_times.py --align 2>&1 | tee "$out/moe_align.txt" ;;
    mla-ring-tests) xdist=$(python3 -c "import xdist" 2>/dev/null && echo "-n 6")
                    AOTUNE_TEST_DEVICE=cuda timeout 200 python3 -m pytest -m gpu -q -p no:cacheprovider $xdist \
                      tests/test_flash_mla.py tests/test_pdl.py -k "mma_path or ring or mla_chain" 2>&1 | tail -25 \
                      | tee "$out/mla_ring_tests.txt" ;;
    mla-ring) (cd tests/bench && timeout 300 python3 mla_h8_ab.py --ring) 2>&1 | tee "$out/mla_ring.txt" ;;
    mla-fused-tests) xdist=$(python3 -c "import xdist" 2>/dev/null && echo "-n 6")
                     AOTUNE_TEST_DEVICE=cuda timeout 200 python3 -m pytest -m gpu -q -p no:cacheprovider $xdist \
                       tests/test_flash_mla.py -k "mma_path or fused" 2>&1 | tail -25 | tee "$out/mla_fused_tests.txt" ;;
    mla-fused) (cd tests/bench && timeout 300 python3 mla_fused_ab.py) 2>&1 | tee "$out/mla_fused.txt" ;;
    mla-floor) timeout 300 python3 tests/bench/bench_mla_floor.py 2>&1 | tee "$out/mla_floor.txt" ;;
    mla-table) timeout 300 python3 tests/bench/bench_flash_mla.py 80 2>&1 | tee "$out/mla_table.txt" ;;
    *) echo "unknown step $step (see the list at the top)" ;;
  esac
  cd "$root"
done
date -u | tee -a "$out/date.txt"
