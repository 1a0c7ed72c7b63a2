//! `EmailHandler`: renders a message from templates and the payload, and
//! delivers it over SMTP (plain, STARTTLS or TLS, with optional auth — all
//! from the SMTP URL), or, as a mail sink, writes it as an `.eml` file in a
//! directory (`TASKPLANE_MAIL_DIR`; `taskplane dev` uses
//! `taskplane-data/mail`), which any mail client opens.
//!
//! The Message-ID is `<task id@taskplane>`: every attempt of a task sends
//! the same one, so a receiver can drop a duplicate delivered by a retry.
//!
//! Payload: `to` (an address or a list), optional `subject` and `body`
//! templates (else the handler's own), optional `data` (the template
//! context; default: the whole payload). Templates use minijinja
//! (`{{ name }}`, `{% if %}`…); an undefined variable is an error, not an
//! empty string.

use async_trait::async_trait;
use lettre::message::{Mailbox, Message, header::ContentType};
use lettre::transport::smtp::Error as SmtpError;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use minijinja::{Environment, UndefinedBehavior};
use serde_json::json;

use taskplane_agent::handler::{HandlerHealth, TaskContext, TaskError, TaskHandler, TaskResult};

/// A message's subject and body templates.
#[derive(Debug, Clone)]
pub struct EmailTemplate {
    /// The subject template.
    pub subject: String,
    /// The plain-text body template.
    pub body: String,
}

/// Where messages go.
pub enum Mailer {
    /// An SMTP server, as a URL (`TASKPLANE_SMTP_URL`).
    Smtp(String),
    /// A directory each message is written to as an `.eml` file.
    Files(std::path::PathBuf),
    /// Nowhere: every attempt fails permanently, saying so.
    Unconfigured,
}

enum Delivery {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Files(std::path::PathBuf, AsyncFileTransport<Tokio1Executor>),
}

/// Sends templated email over SMTP, or into a mail sink.
pub struct EmailHandler {
    delivery: Option<Delivery>,
    from: Mailbox,
    template: Option<EmailTemplate>,
    description: String,
}

impl EmailHandler {
    /// A handler delivering through `mailer` from `from`, with an optional
    /// default template.
    pub fn new(
        mailer: Mailer,
        from: &str,
        template: Option<EmailTemplate>,
    ) -> Result<Self, String> {
        let delivery = match mailer {
            Mailer::Smtp(url) => Some(Delivery::Smtp(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(&url)
                    .map(|builder| builder.build())
                    .map_err(|e| format!("TASKPLANE_SMTP_URL is not a usable SMTP URL: {e}"))?,
            )),
            Mailer::Files(dir) => {
                let transport = AsyncFileTransport::new(&dir);
                Some(Delivery::Files(dir, transport))
            }
            Mailer::Unconfigured => None,
        };
        let from = from
            .parse()
            .map_err(|e| format!("TASKPLANE_SMTP_FROM '{from}' is not an address: {e}"))?;
        Ok(EmailHandler {
            delivery,
            from,
            template,
            description: "Sends an email rendered from templates".into(),
        })
    }

    /// Sets the description registered for the task type.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    fn render(&self, payload: &serde_json::Value) -> Result<(String, String), TaskError> {
        let subject = payload
            .get("subject")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        let body = payload
            .get("body")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        let (subject, body) = match (subject, body, &self.template) {
            (Some(subject), Some(body), _) => (subject, body),
            (subject, body, Some(template)) => (
                subject.unwrap_or(template.subject.clone()),
                body.unwrap_or(template.body.clone()),
            ),
            _ => {
                return Err(TaskError::bad_payload(
                    "subject and body",
                    "templates (this task type has no default)",
                ));
            }
        };
        let context = payload
            .get("data")
            .cloned()
            .unwrap_or_else(|| payload.clone());
        let mut environment = Environment::new();
        environment.set_undefined_behavior(UndefinedBehavior::Strict);
        let render = |name: &str, template: &str| {
            environment.render_str(template, &context).map_err(|e| {
                TaskError::Permanent(format!("the {name} template does not render: {e}"))
            })
        };
        Ok((render("subject", &subject)?, render("body", &body)?))
    }
}

fn recipients(payload: &serde_json::Value) -> Result<Vec<Mailbox>, TaskError> {
    let addresses: Vec<&str> = match payload.get("to") {
        Some(serde_json::Value::String(one)) => vec![one.as_str()],
        Some(serde_json::Value::Array(many)) => many.iter().filter_map(|v| v.as_str()).collect(),
        _ => {
            return Err(TaskError::bad_payload(
                "to",
                "an address or a list of addresses",
            ));
        }
    };
    if addresses.is_empty() {
        return Err(TaskError::bad_payload("to", "at least one address"));
    }
    addresses
        .into_iter()
        .map(|a| {
            a.parse().map_err(|e| {
                TaskError::Permanent(format!("recipient '{a}' is not an address: {e}"))
            })
        })
        .collect()
}

/// SMTP 4xx replies and connection trouble may pass; 5xx replies will not.
fn classify(error: SmtpError) -> TaskError {
    if error.is_permanent() {
        TaskError::Permanent(format!("the SMTP server refused the message: {error}"))
    } else {
        TaskError::Retryable(format!("SMTP delivery failed for now: {error}"))
    }
}

#[async_trait]
impl TaskHandler for EmailHandler {
    async fn handle(&self, context: TaskContext) -> Result<TaskResult, TaskError> {
        let to = recipients(&context.payload)?;
        let (subject, body) = self.render(&context.payload)?;
        let Some(delivery) = &self.delivery else {
            return Err(TaskError::Permanent(
                "no SMTP server is configured: set TASKPLANE_SMTP_URL (e.g. smtp://mail.internal:25), or TASKPLANE_MAIL_DIR to write messages to files; nothing was sent".into(),
            ));
        };
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .header(ContentType::TEXT_PLAIN);
        for recipient in &to {
            builder = builder.to(recipient.clone());
        }
        // The task id makes the Message-ID stable across retries of one task.
        let message_id = format!("<{}@taskplane>", context.task_id);
        let message = builder
            .message_id(Some(message_id.clone()))
            .body(body)
            .map_err(|e| TaskError::Permanent(format!("the message cannot be built: {e}")))?;
        let mut result = json!({
            "message_id": message_id,
            "to": to.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        match delivery {
            Delivery::Smtp(transport) => {
                let response = transport.send(message).await.map_err(classify)?;
                result["smtp_code"] = json!(response.code().to_string());
            }
            Delivery::Files(dir, transport) => {
                tokio::fs::create_dir_all(dir).await.map_err(|e| {
                    TaskError::Retryable(format!(
                        "cannot create the mail directory {}: {e}",
                        dir.display()
                    ))
                })?;
                let id = transport.send(message).await.map_err(|e| {
                    TaskError::Retryable(format!(
                        "cannot write the message into {}: {e}",
                        dir.display()
                    ))
                })?;
                result["file"] = json!(dir.join(format!("{id}.eml")));
            }
        }
        Ok(TaskResult::new(result))
    }

    fn description(&self) -> String {
        self.description.clone()
    }

    fn capabilities(&self) -> Vec<String> {
        vec!["smtp".into()]
    }

    async fn health_check(&self) -> Option<HandlerHealth> {
        Some(match &self.delivery {
            None => HandlerHealth::unhealthy("no SMTP server configured (TASKPLANE_SMTP_URL)"),
            Some(Delivery::Files(dir, _)) => {
                HandlerHealth::healthy(format!("writing messages into {}", dir.display()))
            }
            Some(Delivery::Smtp(transport)) => match transport.test_connection().await {
                Ok(true) => HandlerHealth::healthy("the SMTP server answers"),
                Ok(false) => HandlerHealth::unhealthy("the SMTP server did not accept a NOOP"),
                Err(error) => {
                    HandlerHealth::unhealthy(format!("cannot reach the SMTP server: {error}"))
                }
            },
        })
    }
}
