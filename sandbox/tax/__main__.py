"""``python -m sandbox.tax`` = ``kaipiao sandbox-tax`` without the app's CLI."""

from sandbox.tax.cli import sandbox_tax

if __name__ == "__main__":
    sandbox_tax(prog_name="sandbox-tax")
