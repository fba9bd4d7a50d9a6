//! `spillway status`: the buffer's depth, what is in flight, the dead-letter queue.

use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use serde::Serialize;

/// One queue's numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueStatus {
    /// The queue URL.
    pub url: String,
    /// Messages waiting (`ApproximateNumberOfMessages`).
    pub waiting: u64,
    /// Messages received and not yet deleted (`ApproximateNumberOfMessagesNotVisible`).
    pub in_flight: u64,
    /// Messages not yet visible (`ApproximateNumberOfMessagesDelayed`).
    pub delayed: u64,
}

/// What `status` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The buffer queue, when one is configured.
    pub buffer: Option<QueueStatus>,
    /// The dead-letter queue, when one is configured.
    pub dead_letters: Option<QueueStatus>,
}

/// Reads a queue's numbers.
pub async fn queue(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<QueueStatus, String> {
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .map_err(|e| {
            format!(
                "cannot read {url}: {}",
                aws_sdk_sqs::error::DisplayErrorContext(&e)
            )
        })?
        .attributes
        .unwrap_or_default();
    let get = |k: QueueAttributeName| attrs.get(&k).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(QueueStatus {
        url: url.to_owned(),
        waiting: get(QueueAttributeName::ApproximateNumberOfMessages),
        in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        delayed: get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
    })
}

/// Reads the status of `queue_url` and `dlq_url`.
pub async fn read(
    sqs: &aws_sdk_sqs::Client,
    queue_url: Option<&str>,
    dlq_url: Option<&str>,
) -> Result<Status, String> {
    Ok(Status {
        buffer: match queue_url {
            Some(url) => Some(queue(sqs, url).await?),
            None => None,
        },
        dead_letters: match dlq_url {
            Some(url) => Some(queue(sqs, url).await?),
            None => None,
        },
    })
}

/// The status as text.
pub fn render(status: &Status) -> String {
    let line = |name: &str, q: &Option<QueueStatus>| match q {
        Some(q) => format!(
            "{name:<13} waiting {:>8}   in flight {:>8}   delayed {:>6}   {}\n",
            q.waiting, q.in_flight, q.delayed, q.url
        ),
        None => format!("{name:<13} (not configured)\n"),
    };
    line("buffer", &status.buffer) + &line("dead letters", &status.dead_letters)
}

/// Prints once, or every `watch` until Ctrl-C.
pub async fn run(
    sqs: &aws_sdk_sqs::Client,
    queue_url: Option<&str>,
    dlq_url: Option<&str>,
    json: bool,
    watch: Option<Duration>,
) -> Result<(), String> {
    loop {
        let status = read(sqs, queue_url, dlq_url).await?;
        if json {
            println!(
                "{}",
                serde_json::to_string(&status).map_err(|e| e.to_string())?
            );
        } else {
            print!("{}", render(&status));
        }
        let Some(every) = watch else { return Ok(()) };
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
