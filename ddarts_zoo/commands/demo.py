"""``ddarts-zoo demo``: build every registered model, print the model table, fit one model on digits."""
from __future__ import annotations

import argparse
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--model', default='ddarts_dd1_cifar', help='model run on the digits dataset')
    parser.add_argument('--init-channels', type=int, default=8, help='width of that model (small for CPU)')
    parser.add_argument('--epochs', type=int, default=2)
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--no-macs', action='store_true', help='skip MAC counts in the table (faster)')


def run(args: argparse.Namespace) -> int:
    import timm
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    import ddarts_zoo  # noqa: F401  (registers the models)
    from ..data import build_dataset, dataset_info
    from .info import format_rows, model_rows

    names = [n for n in timm.list_models('ddarts_*') if not n.startswith('ddarts_genotype')]
    print(f'Building {len(names)} registered models ...')
    print(format_rows(model_rows(names, with_macs=not args.no_macs)))

    torch.manual_seed(args.seed)
    info = dataset_info('digits')
    model = timm.create_model(args.model, num_classes=info.num_classes, in_chans=info.in_chans,
                              init_channels=args.init_channels)
    train = DataLoader(build_dataset('digits', 'train'), batch_size=args.batch_size, shuffle=True,
                       generator=torch.Generator().manual_seed(args.seed))
    test = DataLoader(build_dataset('digits', 'test'), batch_size=256)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)
    print(f'\nFitting {args.model} (init_channels={args.init_channels}) on digits for {args.epochs} epoch(s)')
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        bar = tqdm(train, desc=f'epoch {epoch + 1}/{args.epochs}', leave=False)
        for x, y in bar:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.set_postfix(loss=f'{loss.item():.3f}')
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in test:
                correct += (model(x).argmax(1) == y).sum().item()
                total += len(y)
        print(f'epoch {epoch + 1}: last batch loss {loss.item():.3f}, held-out top-1 {100 * correct / total:.2f}% '
              f'({total} images, {time.time() - start:.0f}s)')
    return 0
