"""``atlaspipe completion SHELL``: the shell code that completes ``atlaspipe``'s commands and options.

``eval "$(atlaspipe completion bash)"`` (in ``~/.bashrc``) completes them in bash; argcomplete's own
``register-python-argcomplete atlaspipe`` prints the same code.
"""

from __future__ import annotations

import argparse

SHELLS = ("bash", "zsh", "fish", "tcsh", "powershell")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shell", choices=SHELLS, nargs="?", default="bash",
                        help="the shell to complete in (default bash)")


def main(args: argparse.Namespace) -> int:
    from argcomplete.shell_integration import shellcode

    print(shellcode(["atlaspipe"], shell=args.shell), end="")
    return 0
