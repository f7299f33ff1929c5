"""``python -m app.integrations.tax.sandbox`` = ``kaipiao sandbox-tax`` without the app's CLI."""

from app.integrations.tax.cli import sandbox_tax

if __name__ == "__main__":
    sandbox_tax(prog_name="sandbox-tax")
