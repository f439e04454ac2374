"""The `uniqa` console script: `uniqa app ...` starts here without importing `modeling_uniqa` (its
page process needs only gradio, see `uniqa_app.serve`); every other subcommand is
`modeling_uniqa.cli.main`'s, unchanged."""

import argparse
import sys


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["app"]:
        from .serve import DESCRIPTION, add_arguments, serve

        parser = argparse.ArgumentParser(prog="uniqa app", description=DESCRIPTION)
        add_arguments(parser)
        return serve(parser.parse_args(argv[1:]))
    from modeling_uniqa.cli import main as library_main

    return library_main(argv)


if __name__ == "__main__":
    sys.exit(main())
