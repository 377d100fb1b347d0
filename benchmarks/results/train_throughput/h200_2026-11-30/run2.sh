#!/bin/bash
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
R=$OUT/report2.txt
python3 .gpu/compute.py cuda 512 >> $R 2>&1
python3 .gpu/compute.py cuda 32 >> $R 2>&1
python3 .gpu/tile.py .gpu/shards /tmp/tiled128 128 >> $R 2>&1
(nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 1 > $OUT/smi2.csv 2>/dev/null &)
for cfg in "long-w4:--preset paper" "long-w8:--preset paper --set num_workers=8"; do
  name=${cfg%%:*}; args=${cfg#*:}; echo "== $name" >> $R
  timeout 120 torchrun --standalone --nproc-per-node 1 -m trainer.cli train $args --set 'text_encoder="/tmp/te"' --set log_every=10 --set ckpt_every=100000 \
     --data /tmp/tiled128 --out /tmp/run-$name --device cuda --max-steps 150 --no-progress > $OUT/$name.log 2>&1; echo "rc $?" >> $R
  cp /tmp/run-$name/metrics.csv $OUT/$name.metrics.csv 2>/dev/null; tail -1 $OUT/$name.log >> $R
done
cat $R
