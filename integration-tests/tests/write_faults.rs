//! A database that refuses to record results. The server tries the write
//! again, then ends the reporting agent's session so its tasks go back to the
//! queue; nothing stays RUNNING under a lease the live session keeps
//! extending. Once writes work again, the task completes.

use integration_tests::{
    Backend, TestAgent, TestServer, attempts_of, enqueue, enqueue_request, wait_for, wait_terminal,
};
use serde_json::json;
use taskplane_agent::{TaskContext, TaskError, TaskHandler, TaskRegistry, TaskResult};
use taskplane_proto::v1::{EnqueueTaskRequest, ListTaskAttemptsRequest, TaskStatus};
use taskplane_server::store::{PostgresStore, SqliteStore};

struct Done;

#[async_trait::async_trait]
impl TaskHandler for Done {
    async fn handle(&self, _: TaskContext) -> Result<TaskResult, TaskError> {
        Ok(TaskResult::new(json!({"done": true})))
    }
}

/// Makes every write of a COMPLETED status fail, or (with `false`) stops that.
async fn refuse_completions(backend: &Backend, database_url: &str, refuse: bool) {
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect_with(
                SqliteStore::connect_options(database_url, Default::default()).expect("SQLite URL"),
            )
            .await
            .expect("open the server's SQLite file");
            let sql = if refuse {
                "CREATE TRIGGER refuse_completions BEFORE UPDATE OF status ON tasks
                 WHEN NEW.status = 'completed'
                 BEGIN SELECT RAISE(ABORT, 'injected fault: completions refused'); END"
            } else {
                "DROP TRIGGER refuse_completions"
            };
            sqlx::raw_sql(sql).execute(&pool).await.expect("trigger");
            pool.close().await;
        }
        Backend::Postgres(_) => {
            let pool = sqlx::PgPool::connect_with(
                PostgresStore::connect_options(database_url).expect("PostgreSQL URL"),
            )
            .await
            .expect("connect to the server's schema");
            let sql = if refuse {
                "CREATE FUNCTION refuse_completions() RETURNS trigger LANGUAGE plpgsql AS
                     $$ BEGIN RAISE EXCEPTION 'injected fault: completions refused'; END $$;
                 CREATE TRIGGER refuse_completions BEFORE UPDATE ON tasks FOR EACH ROW
                     WHEN (NEW.status = 'completed') EXECUTE FUNCTION refuse_completions();"
            } else {
                "DROP TRIGGER refuse_completions ON tasks; DROP FUNCTION refuse_completions();"
            };
            sqlx::raw_sql(sql).execute(&pool).await.expect("trigger");
            pool.close().await;
        }
    }
}

async fn a_result_that_cannot_be_written_sends_the_task_back_to_the_queue(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let mut registry = TaskRegistry::new();
    registry.register_handler("finish", Box::new(Done));
    let agent = TestAgent::start(&server, "finisher", registry).await;
    let mut tasks = server.tasks().await;
    refuse_completions(&backend, &server.database_url, true).await;

    let task = enqueue(
        &mut tasks,
        EnqueueTaskRequest {
            max_attempts: 50,
            ..enqueue_request("finish", json!({}))
        },
    )
    .await;
    // The first attempt ran, its result could not be recorded, and the
    // session that held it ended: the attempt is lost, not held forever.
    wait_for(|| {
        let mut tasks = tasks.clone();
        let id = task.id.clone();
        async move {
            let attempts = tasks
                .list_task_attempts(ListTaskAttemptsRequest { id })
                .await
                .expect("attempts")
                .into_inner()
                .attempts;
            attempts
                .first()
                .is_some_and(|a| a.outcome == "lost" && a.finished_at.is_some())
        }
    })
    .await;

    refuse_completions(&backend, &server.database_url, false).await;
    let finished = wait_terminal(&mut tasks, &task.id).await;
    assert_eq!(finished.status(), TaskStatus::Completed);
    assert!(finished.attempts >= 2, "the lost attempt was run again");
    let attempts = attempts_of(&mut tasks, &task.id).await;
    let completed: Vec<_> = attempts
        .iter()
        .filter(|a| a.outcome == "completed")
        .collect();
    assert_eq!(
        completed.len(),
        1,
        "exactly one attempt completed: {attempts:?}"
    );
    assert_eq!(completed[0].attempt, finished.attempts);
    agent.stop().await.unwrap();
    server.stop().await;
}

integration_tests::on_every_backend!(
    a_result_that_cannot_be_written_sends_the_task_back_to_the_queue
);
