"""`python -m infersim`: the infersim command line."""

from infersim import main

main()
