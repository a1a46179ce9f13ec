"""The learner alone on a device: gradient updates/s of the default DQN step by batch size.

    python benchmarks/learner_speed.py                                  # CPU, batch 128 512 2048
    python benchmarks/learner_speed.py --device cuda --batch 128 512 2048
    python benchmarks/learner_speed.py --threads 2 --batch 256 --label champion +experiment=champion
    python benchmarks/learner_speed.py --threads 2 --batch 256 512 --precision 32-true bf16-mixed \
        --label champion +experiment=champion

The update of ``throughput.py`` (Huber loss, backward, clipping, AdamW, soft target update),
its batch copied from the CPU every update as in training. Writes
benchmarks/results/learner_speed-<device>-t<threads>.json.
"""

from __future__ import annotations

import argparse

from common import save
from throughput import learner_rate


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    ap.add_argument("--batch", type=int, nargs="+", default=[128, 512, 2048])
    ap.add_argument("--updates", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--precision", nargs="+", default=["32-true"],
                    help="32-true and/or bf16-mixed (the loss under bfloat16 autocast)")
    ap.add_argument("--label", default=None, help="added to the results file's name")
    args, overrides = ap.parse_known_args()  # the rest: config overrides (the network...)
    import torch

    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: this torch sees no CUDA device")
    rates = {}
    for precision in args.precision:
        for b in args.batch:
            r = learner_rate(b, args.updates, device=args.device, overrides=overrides,
                             precision=precision)
            print(f"{precision}, batch {b}: {r:.1f} updates/s ({b * r:,.0f} samples/s)",
                  flush=True)
            rates.setdefault(precision, {})[str(b)] = r
    gpu = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else None
    label = f"-{args.label}" if args.label else ""
    save(f"learner_speed-{args.device.split(':')[0]}{label}-t{args.threads}",
         {"device": args.device, "gpu": gpu, "threads": args.threads, "updates": args.updates,
          "overrides": overrides, "updates_per_s": rates})


if __name__ == "__main__":
    main()
