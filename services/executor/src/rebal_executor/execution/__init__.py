"""The executor's engine: a non-dry-run plan in, orders on the venues and what happened out.

One concept per module, layered bottom-up (each imports only the ones above it in this list; an
import-linter contract keeps it so):

- `ports`: the journal port (`Journal`, its records) and the `Context` every step shares;
- `outcomes`: how a step ends, as values (`Stop`, `Rejected`, `Unknown`), and our client order ids;
- `guards`: the pre-trade checks (halted, too old, live off, notional limits, prices moved);
- `orders`: one order at a venue — sent under its id, looked up by it, settled, adopted;
- `legs`: one leg of a plan — written before it is sent, resized once, published, reported;
- `release`: cancelling our own open orders that lock what a leg needs;
- `holdings`: an account's balance read shared by its sells;
- `accounts`: a phase's legs per account, the accounts concurrently;
- `sells`, `buys`, `transfers`: the phases of a run;
- `reconcile`: our orders looked up again, other open orders classified external;
- `killswitch`: halt and resume;
- `balances`: the end-of-run audit of balances against fills;
- `runs`: the run state machine that orders the steps (`Executor`).

The rules themselves (state machines, limits, sizing) are pure: `rebal.core.execution`,
`rebal.core.sizing`. See docs/execution.md.
"""

from rebal_executor.execution.outcomes import OUR_PREFIX, client_order_id
from rebal_executor.execution.ports import Context, Journal, OrderRecord, Report, RunRecord
from rebal_executor.execution.runs import Executor

__all__ = [
    "OUR_PREFIX",
    "Context",
    "Executor",
    "Journal",
    "OrderRecord",
    "Report",
    "RunRecord",
    "client_order_id",
]
