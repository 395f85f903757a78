//! Unit tests of loading, validating and overlaying the configuration.

use super::*;

fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cairn.toml");
    std::fs::write(&path, text).unwrap();
    Config::load(Some(&path), env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

#[test]
fn unknown_keys_name_the_file_and_the_key() {
    let err = load("[sources.app]\nurl = \"postgres://h/db\"\njobz = 3\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cairn.toml") && err.contains("sources.app") && err.contains("jobz"),
        "{err}"
    );
}

#[test]
fn bad_values_say_what_was_expected() {
    let err = load("full-backup = \"dayly\"\n", &[]).unwrap_err().to_string();
    assert!(
        err.contains("full-backup") && err.contains("dayly") && err.contains("daily"),
        "{err}"
    );
    let err = load("[retention]\nhourly = -1\n", &[]).unwrap_err().to_string();
    assert!(err.contains("retention.hourly"), "{err}");
    let err = load("[sources.app]\nurl = \"oracle://h\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sources.app.url") && err.contains("unsupported scheme"),
        "{err}"
    );
    let err = load("jobs = 0\n", &[]).unwrap_err().to_string();
    assert!(err.contains("jobs: expected at least 1"), "{err}");
    // "Never" values are refused, not carried into clock arithmetic that would overflow.
    let err = load("lock-ttl-seconds = 9223372036854775807\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("lock-ttl-seconds: expected at most 604800"), "{err}");
    let err = load("", &[("CAIRN_LOCK_WAIT_SECONDS", "99999999999")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("lock-wait-seconds: expected at most 86400"), "{err}");
    let err = load(
        "[sources.app]\nurl = \"mysql://h\"\nlock-wait-seconds = 99999999999\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("sources.app.lock-wait-seconds: expected at most"), "{err}");
    let err = load(
        "[destinations.far]\nurl = \"s3://b/p\"\npart-size-mib = 17592186044416\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("part-size-mib: expected at most 5120"), "{err}");
    let err = load("[sources.app]\nurl = \"mysql://h\"\ndestination = \"nowhere\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sources.app.destination") && err.contains("nowhere"),
        "{err}"
    );
    let err = load("[destinations.local]\nurl = \"/b\"\nregion = \"x\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("destinations.local.region") && err.contains("only S3"),
        "{err}"
    );
    let err = load("[sources.App]\nurl = \"mysql://h\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("sources.App"), "{err}");
    let err = load("jobs = [", &[]).unwrap_err().to_string();
    assert!(err.contains("invalid TOML"), "{err}");
}

#[test]
fn environment_overrides_and_adds_settings() {
    let config = load(
        "jobs = 2\n[sources.app-db]\nurl = \"postgres://backup@h/app\"\n",
        &[
            ("CAIRN_JOBS", "6"),
            ("CAIRN_RETENTION__HOURLY", "24"),
            ("CAIRN_SOURCES__APP_DB__PASSWORD", "from-env"),
            ("CAIRN_SOURCES__OTHER__URL", "mysql://root@h2"),
            ("CAIRN_CONFIG", "/ignored"),
            // Read where pg_dump is looked for, as the advice of a missing pg_dump says.
            ("CAIRN_PG_DUMP", "/usr/lib/postgresql/15/bin/pg_dump"),
            ("CAIRN_TEST_PG_URL", "postgres://ignored"),
            ("PATH", "/bin"),
        ],
    )
    .unwrap();
    assert_eq!(config.settings.jobs, Some(6));
    assert_eq!(config.settings.retention.hourly, Some(24));
    assert_eq!(
        config.source("app-db").unwrap().url.password.unwrap().expose(),
        "from-env"
    );
    assert_eq!(config.source("other").unwrap().url.engine, crate::engine::Engine::Mysql);
}

#[test]
fn environment_errors_name_the_variable() {
    let err = load("", &[("CAIRN_JOBS", "many")]).unwrap_err().to_string();
    assert!(
        err.contains("environment variable CAIRN_JOBS") && err.contains("jobs"),
        "{err}"
    );
    let err = load("", &[("CAIRN_COLOUR", "red")]).unwrap_err().to_string();
    assert!(
        err.contains("environment variable CAIRN_COLOUR") && err.contains("colour"),
        "{err}"
    );
}

#[test]
fn secrets_are_masked_and_read_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("pw");
    std::fs::write(&secret_file, "file-secret\n").unwrap();
    let text = format!(
        "[sources.a]\nurl = \"postgres://u:url-secret@h/db\"\n[sources.b]\nurl = \"mysql://u@h\"\npassword-file = {:?}\n\
         [destinations.s3]\nurl = \"s3://bkt/p\"\naccess-key-id = \"AKIA\"\nsecret-access-key = \"key-secret\"\n",
        secret_file.display().to_string()
    );
    let config = load(
        &text,
        &[
            ("CAIRN_SOURCES__C__URL", "mysql://u@h"),
            ("CAIRN_SOURCES__C__PASSWORD", "env-secret"),
        ],
    )
    .unwrap();
    let shown = config.show();
    for secret in ["url-secret", "file-secret", "key-secret", "env-secret"] {
        assert!(!shown.contains(secret), "{secret} leaked into:\n{shown}");
    }
    assert!(!format!("{config:?}").contains("key-secret"));
    assert_eq!(
        config.source("b").unwrap().url.password.unwrap().expose(),
        "file-secret"
    );
    let DestinationSpec::S3(options) = config.destination("s3").unwrap() else {
        panic!("not S3")
    };
    assert_eq!(options.secret_access_key.unwrap().expose(), "key-secret");
    let err = load("[sources.a]\nurl = \"postgres://u:x@h/db\"\npassword = \"y\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("sources.a.password") && !err.contains("\"y\""), "{err}");
}

#[test]
fn filters_come_from_the_file_and_the_environment() {
    let config = load(
        "[sources.app]\nurl = \"postgres://h/db\"\n[sources.app.filters]\nexclude-tables = [\"public.tmp_*\"]\n",
        &[("CAIRN_SOURCES__APP__FILTERS__EXCLUDE_SCHEMAS", "audit, scratch")],
    )
    .unwrap();
    let options = config.copy_options_of("app", None);
    assert_eq!(options.filters.exclude_tables, ["public.tmp_*"]);
    assert_eq!(options.filters.exclude_schemas, ["audit", "scratch"]);
    let err = load(
        "[sources.app]\nurl = \"postgres://h/db\"\n[sources.app.filters]\nexclude-table = [\"x\"]\n",
        &[],
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("sources.app.filters") && text.contains("exclude-table"),
        "{text}"
    );
}

#[test]
fn the_example_configuration_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/cairn.example.toml");
    // The example takes the webhook URL from the environment, as it recommends.
    let env = [(
        "CAIRN_NOTIFICATIONS__WEBHOOK_URL".to_string(),
        "https://hooks.example.com/T000/B000/XXXX".to_string(),
    )];
    let config = Config::load(Some(&path), env).unwrap();
    assert!(!config.settings.sources.is_empty() && !config.settings.destinations.is_empty());
    assert!(config.settings.notifications.webhook_url.is_some());
    for name in config.settings.sources.keys() {
        config.destination_of(name).unwrap();
    }
}

#[test]
fn incrementals_are_a_postgres_setting_and_ddl_capture_excludes_filters() {
    let err = load("[sources.app]\nurl = \"mysql://h/db\"\nincrementals = true\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sources.app.incrementals") && err.contains("PostgreSQL sources only"),
        "{err}"
    );
    assert!(
        load(
            "[sources.app]\nurl = \"postgres://h/db\"\nincrementals = true\n[sources.app.filters]\nexclude-tables = [\"t\"]\n",
            &[],
        )
        .is_ok()
    );
    let err = load(
        "[sources.app]\nurl = \"postgres://h/db\"\nincrementals = true\non-ddl = \"capture\"\n[sources.app.filters]\nexclude-tables = [\"t\"]\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("sources.app.on-ddl") && err.contains("filters"), "{err}");
    assert!(load("[sources.app]\nurl = \"postgres://h/db\"\non-ddl = \"full\"\n", &[]).is_err());
    let config = load(
        "[sources.app]\nurl = \"postgres://h/db\"\non-log-gap = \"full\"\n",
        &[("CAIRN_SOURCES__APP__INCREMENTALS", "true")],
    )
    .unwrap();
    let options = config.copy_options_of("app", None);
    assert!(options.postgres.incrementals && options.full_on_log_gap);
    assert!(load("[sources.app]\nurl = \"postgres://h/db\"\non-log-gap = \"full\"\n", &[]).is_err());
}

#[test]
fn users_are_a_source_setting_also_from_the_environment() {
    let config = load(
        "[sources.app]\nurl = \"postgres://h/db\"\n",
        &[("CAIRN_SOURCES__APP__USERS", "true")],
    )
    .unwrap();
    assert_eq!(config.copy_options_of("app", None).users, Some(true));
    let config = load(
        "[sources.app]\nurl = \"mysql://h/db\"\nusers = true\nusers-include-root = true\n",
        &[],
    )
    .unwrap();
    let options = config.copy_options_of("app", None);
    assert!(options.users == Some(true) && options.mysql.users_include_root);
    let err = load(
        "[sources.app]\nurl = \"mysql://h/db\"\nusers-include-root = true\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("sources.app.users-include-root") && err.contains("users = true"),
        "{err}"
    );
    let err = load(
        "[sources.app]\nurl = \"postgres://h/db\"\nusers = true\nusers-include-root = true\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("MySQL/MariaDB sources only"), "{err}");
}

#[test]
fn the_compression_level_is_a_zstd_level_per_source_or_for_all() {
    let config = load(
        "compression-level = 3\n[sources.app]\nurl = \"postgres://h/db\"\n[sources.other]\nurl = \"postgres://h/db2\"\ncompression-level = 9\n",
        &[],
    )
    .unwrap();
    assert_eq!(config.compression_level_of("app"), 3);
    assert_eq!(config.compression_level_of("other"), 9);
    let config = load(
        "[sources.app]\nurl = \"postgres://h/db\"\n",
        &[("CAIRN_COMPRESSION_LEVEL", "5")],
    )
    .unwrap();
    assert_eq!(config.compression_level_of("app"), 5);
    let config = load("[sources.app]\nurl = \"postgres://h/db\"\n", &[]).unwrap();
    assert_eq!(
        config.compression_level_of("app"),
        crate::repo::codec::DEFAULT_ZSTD_LEVEL
    );
    let err = load("compression-level = 0\n", &[]).unwrap_err().to_string();
    assert!(err.contains("compression-level") && err.contains("1 to 19"), "{err}");
}
