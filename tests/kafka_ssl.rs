//! The pipeline against a broker reached over TLS only (the test bed's Tansu behind
//! stunnel, advertising the TLS address; the service trusts the test CA).

use std::path::Path;

use ftp_pooler_testbed::scenario::{clean_run, kill_stage_mid_run};
use ftp_pooler_testbed::{use_secured_broker, Security};

const EXE: &str = env!("CARGO_BIN_EXE_ftp-pooler");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_ssl_every_task_gets_exactly_one_result_and_its_offset_committed() {
    use_secured_broker(Security::Ssl);
    clean_run(Path::new(EXE), 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_ssl_a_killed_publish_loses_nothing() {
    use_secured_broker(Security::Ssl);
    kill_stage_mid_run(Path::new(EXE), "publish").await;
}
