"""``python -m tools readme [--check]``: rewrite (or check) the README's generated matrix section."""

from __future__ import annotations

from tools.catalogue.paths import ROOT, display_path
from tools.catalogue.taxonomy import load_taxonomy
from tools.catalogue.validate import load_catalogue
from tools.outputs.generated import write_or_check

NAME = "readme"
HELP = "rewrite the README's generated section (the stage x axis matrix); --check: exit 1 if it is stale"
README = ROOT / "README.md"


def configure(parser) -> None:
    """The command's options."""
    parser.add_argument("--check", action="store_true", help="exit 1 if the README's generated section is stale")


def run(args) -> int:
    """Regenerate the README's generated section, or check it is fresh."""
    from tools.catalogue.problems import UserError
    from tools.outputs.readme import MarkersMissing, update_readme

    if not README.exists():
        raise UserError(f"{display_path(README)} does not exist")
    try:
        text = update_readme(README.read_text(encoding="utf-8"), load_catalogue(), load_taxonomy())
    except MarkersMissing as exc:
        raise UserError(str(exc)) from None
    return write_or_check(README, text, check=args.check, command="python -m tools readme")
