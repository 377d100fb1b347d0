#!/bin/bash
# One prepared device check: environment probe, paper-preset throughput (torchrun, NCCL, bf16), batch-32 throughput.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
DEV=${DEV:-cuda}; STEPS=${STEPS:-60}; K=${K:-16}
R=$OUT/report.txt; TV=""; [ -x /usr/bin/time ] && TV="/usr/bin/time -v"
{
echo "== probe"; date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
python3 -c "import torch,sys;print('torch',torch.__version__,'cuda',torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
python3 -c "import tensorrt" 2>&1 | tail -1
ldconfig -p | grep -c nvinfer; (find / -xdev -name 'libnvinfer*' 2>/dev/null | head -3)
python3 -c "import onnxruntime as o;print('ort',o.__version__,o.get_available_providers())"
which trtexec || echo "no trtexec"
nproc
} >> $R 2>&1
python3 .gpu/tile.py .gpu/shards /tmp/tiled $K >> $R 2>&1
(nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 1 > $OUT/smi.csv 2>/dev/null &)
for cfg in "paper-b512:--preset paper" "vit-tiny-b32:--preset paper --set batch_size=32" "paper-b512-w12:--preset paper --set num_workers=12"; do
  name=${cfg%%:*}; args=${cfg#*:}
  echo "== $name" >> $R
  timeout ${TMO:-150} $TV torchrun --standalone --nproc-per-node 1 -m trainer.cli train $args --set 'text_encoder="/tmp/te"' --set log_every=5 --set ckpt_every=100000 \
     --data /tmp/tiled --out /tmp/run-$name --device $DEV --max-steps $STEPS --no-progress > $OUT/$name.log 2>&1; echo "rc $?" >> $R
  cp /tmp/run-$name/metrics.csv $OUT/$name.metrics.csv 2>/dev/null
  grep -E '"samples_per_s"|Error|error' $OUT/$name.log | tail -3 >> $R
  grep -E 'Maximum resident|Elapsed' $OUT/$name.log >> $R
done
python3 -c "import torch;print('max cuda mem GiB (this process only)', torch.cuda.max_memory_allocated()/2**30 if torch.cuda.is_available() else 0)" >> $R 2>&1
cat $R
