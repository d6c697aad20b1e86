"""``ddarts-zoo publish DIR --repo-id ORG/NAME``: upload an export folder to the Hugging Face Hub.

Uses ``huggingface_hub`` as configured: ``HF_ENDPOINT`` selects the server, ``HF_TOKEN`` (or ``hf auth
login``, or ``--token``) the credentials.
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('folder', help='folder written by `ddarts-zoo export` / `convert-official`')
    parser.add_argument('--repo-id', required=True, help='target model repo, e.g. ddarts-zoo/ddarts_dd1_cifar.digits')
    parser.add_argument('--private', action='store_true', help='create the repo as private')
    parser.add_argument('--revision', default=None, help='branch to commit to (default: main)')
    parser.add_argument('--token', default=None, help='Hub token (default: HF_TOKEN / the stored login)')
    parser.add_argument('--message', default=None, help='commit message')


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..export import publish_folder
    try:
        url = publish_folder(args.folder, args.repo_id, token=args.token, private=args.private,
                             revision=args.revision, commit_message=args.message)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        raise UserError(str(err)) from err
    print(f'published {args.folder} to {args.repo_id}: {url}')
    return 0
