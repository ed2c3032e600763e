"""Generate the confounded synthetic dataset in VOC layout."""
from pathlib import Path

from _common import parser

from conta_core.data.synthetic import generate_synthetic

if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    generate_synthetic(args.out, **args.settings)
