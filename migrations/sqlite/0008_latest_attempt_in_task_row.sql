-- The claim and the completion, the path every task takes, no longer write
-- attempt rows. A task row already says which attempt it is on, who holds
-- its lease and when that attempt started; it now keeps the agent and the
-- session after completing too, so its latest attempt is read from the row
-- while it runs and once it completed (`store::attempts_sql`).
-- `task_attempts` keeps the attempts that ended otherwise (failed, lost,
-- cancelled), each written as it ends, before the task row forgets who ran
-- it (`store::end_attempts_sql`). Rows written before this migration stay:
-- an open one is filled in when its attempt ends that way, and one for a
-- task's latest attempt gives way to the task row.
DROP TRIGGER task_attempt_begins;
DROP TRIGGER task_attempt_begins_at_enqueue;
DROP TRIGGER task_attempt_ends_completed;
