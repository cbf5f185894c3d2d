"""Key budgets: what a job may cost at worst, and which window its key's budget counts it in.

Pure values, no I/O: :mod:`relayq.budgets.windows` (a period's UTC window),
:mod:`relayq.budgets.estimate` (a request's worst case in tokens and dollars),
:mod:`relayq.budgets.reservations` (a key's budget, a job's reservation, the
refusal). The ledger itself is SQL, in :mod:`relayq.store.spend`: a job reserves
its worst case in the transaction that stores it, and the transaction that
ends it books its real cost.
"""

from relayq.budgets.estimate import WorstCase, worst_case
from relayq.budgets.reservations import BudgetLimits, OverBudget, Reservation
from relayq.budgets.windows import Period, window_of

__all__ = [
    "BudgetLimits",
    "OverBudget",
    "Period",
    "Reservation",
    "WorstCase",
    "window_of",
    "worst_case",
]
