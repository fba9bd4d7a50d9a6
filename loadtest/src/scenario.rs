//! The scenarios: an offered-rate schedule, faults at fixed times, and the pipeline's settings.

use spillway_core::limits::BufferKind;

/// A stretch of constant offered rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phase {
    /// Requests per second.
    pub rate: u32,
    /// How long, seconds.
    pub secs: u64,
}

/// Something done to the pipeline while the load runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// msk-gate refuses every authentication for this long and drops the open connections, so
    /// every client must reconnect into the refusal: a broker outage as clients see it.
    BrokerOutage {
        /// Seconds.
        secs: u64,
    },
    /// `kill -9` of the drain process mid-batch; a new one starts after this long.
    KillDrain {
        /// Seconds until the restart.
        restart_after_secs: u64,
    },
}

/// A fault and when it strikes, seconds after the load starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timed {
    /// Seconds after the start.
    pub at_secs: u64,
    /// What.
    pub fault: Fault,
}

/// One scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// Command-line name.
    pub name: &'static str,
    /// One line for the report.
    pub title: &'static str,
    /// The buffer.
    pub buffer: BufferKind,
    /// The offered rate over time.
    pub phases: Vec<Phase>,
    /// Faults.
    pub faults: Vec<Timed>,
    /// Drain workers (local "Lambda containers"), each with its own producer.
    pub drain_workers: usize,
    /// msk-gate's connection attempts per second for the run (MSK Serverless: 100).
    pub connects_per_sec: u32,
    /// msk-gate's session lifetime for the run, seconds (0: until the 15-minute token expires).
    pub session_secs: u64,
    /// Message value size, bytes.
    pub message_bytes: usize,
    /// Distinct Kafka keys (0: no key).
    pub keys: u32,
}

impl Scenario {
    /// Seconds the load runs.
    pub fn duration_secs(&self) -> u64 {
        self.phases.iter().map(|p| p.secs).sum()
    }

    /// Requests the schedule offers.
    pub fn offered(&self) -> u64 {
        self.phases.iter().map(|p| u64::from(p.rate) * p.secs).sum()
    }

    /// Seconds after the start when the first highest-rate phase begins (the start of the burst).
    pub fn burst_start_secs(&self) -> u64 {
        let peak = self.phases.iter().map(|p| p.rate).max().unwrap_or(0);
        self.phases
            .iter()
            .take_while(|p| p.rate != peak)
            .map(|p| p.secs)
            .sum()
    }

    /// Seconds after the start when the highest-rate phase ends (the end of the burst).
    pub fn burst_end_secs(&self) -> u64 {
        let peak = self.phases.iter().map(|p| p.rate).max().unwrap_or(0);
        let mut t = 0;
        let mut end = 0;
        for p in &self.phases {
            t += p.secs;
            if p.rate == peak {
                end = t;
            }
        }
        end
    }

    fn base(name: &'static str, title: &'static str, phases: Vec<Phase>) -> Self {
        Self {
            name,
            title,
            buffer: BufferKind::Sqs,
            phases,
            faults: Vec::new(),
            drain_workers: 4,
            connects_per_sec: 100,
            session_secs: 0,
            message_bytes: 1024,
            keys: 100,
        }
    }

    /// Every scenario at its default size (each finishes in minutes here), or the short CI size.
    pub fn all(quick: bool) -> Vec<Self> {
        let (steady, spike, secs) = if quick {
            (50, 500, 15)
        } else {
            (100, 2000, 30)
        };
        let burst = |lead: u64| {
            vec![
                Phase {
                    rate: steady,
                    secs: lead,
                },
                Phase { rate: spike, secs },
                Phase {
                    rate: steady,
                    secs: lead,
                },
            ]
        };
        let lead = if quick { 5 } else { 10 };
        let outage = Timed {
            at_secs: lead + secs / 4,
            fault: Fault::BrokerOutage { secs: secs / 2 + 2 },
        };
        vec![
            Self::base(
                "steady",
                "steady load",
                vec![Phase {
                    rate: steady * 2,
                    secs: secs * 2,
                }],
            ),
            Self::base("spike", "a burst of 20× the steady rate", burst(lead)),
            Self {
                faults: vec![outage],
                ..Self::base(
                    "spike-outage",
                    "the burst, with the broker refusing every client for half of it",
                    burst(lead),
                )
            },
            Self {
                drain_workers: 16,
                connects_per_sec: 5,
                ..Self::base(
                    "iam-throttle",
                    "the burst, with 5 connection attempts/s allowed and 16 drain workers",
                    burst(lead),
                )
            },
            Self {
                session_secs: 5,
                ..Self::base(
                    "token-expiry",
                    "the burst, with sessions that end every 5 s (re-authentication)",
                    burst(lead),
                )
            },
            Self {
                faults: vec![Timed {
                    at_secs: lead + secs / 3,
                    fault: Fault::KillDrain {
                        restart_after_secs: 5,
                    },
                }],
                ..Self::base(
                    "drain-kill",
                    "the burst, with the drain killed (kill -9) mid-batch and restarted 5 s later",
                    burst(lead),
                )
            },
            Self {
                buffer: BufferKind::Kinesis,
                ..Self::base(
                    "kinesis-spike",
                    "the burst, buffered in Kinesis (kinesalite)",
                    vec![
                        Phase {
                            rate: steady,
                            secs: lead,
                        },
                        Phase {
                            rate: spike / 4,
                            secs,
                        },
                        Phase {
                            rate: steady,
                            secs: lead,
                        },
                    ],
                )
            },
        ]
    }

    /// The scenario called `name`.
    pub fn named(name: &str, quick: bool) -> Option<Self> {
        Self::all(quick).into_iter().find(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spike_is_twenty_times_the_steady_rate_and_the_outage_falls_inside_it() {
        let s = Scenario::named("spike-outage", false).expect("defined");
        assert_eq!(s.phases[1].rate, 20 * s.phases[0].rate);
        assert_eq!(s.burst_end_secs(), 40);
        let Timed {
            at_secs,
            fault: Fault::BrokerOutage { secs },
        } = s.faults[0]
        else {
            panic!("an outage")
        };
        assert!(at_secs > 10 && at_secs + secs < 40);
        let quick = Scenario::named("spike-outage", true).expect("defined");
        assert!(quick.duration_secs() <= 30, "CI's version is short");
    }
}
