"""`python -m modeling_uniqa.cli ...` (and `accelerate launch -m modeling_uniqa.cli ...`): `uniqa`."""

import sys

from . import main

sys.exit(main())
