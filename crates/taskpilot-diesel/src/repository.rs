use taskpilot_app::{Cursor, RepoError, TaskFilter, TaskRepository};
use taskpilot_domain::{Task, TaskId};

use crate::PgPool;

/// The `TaskRepository` on PostgreSQL.
#[derive(Clone)]
pub struct PgTaskRepository {
    pool: PgPool,
}

impl PgTaskRepository {
    /// A repository over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

impl TaskRepository for PgTaskRepository {
    fn insert(&self, task: &Task) -> Result<(), RepoError> {
        let _ = (&self.pool, task);
        Err(RepoError::Unexpected(anyhow::anyhow!("skeleton")))
    }
    fn get(&self, id: TaskId) -> Result<Task, RepoError> {
        Err(RepoError::NotFound(id))
    }
    fn update(&self, task: &Task, expected_version: u64) -> Result<(), RepoError> {
        let _ = (task, expected_version);
        Err(RepoError::Unexpected(anyhow::anyhow!("skeleton")))
    }
    fn list(&self, filter: &TaskFilter, after: Option<Cursor>, limit: u32) -> Result<Vec<Task>, RepoError> {
        let _ = (filter, after, limit);
        Ok(vec![])
    }
    fn ping(&self) -> Result<(), RepoError> {
        Ok(())
    }
}
