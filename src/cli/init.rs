//! `aex init`: `$AEX_HOME`, `aex.toml` with fresh secrets, a starter models file, the database
//! (embedded unless a URL is given), migrations, and an operator token.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{bail, Context};
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde_json::json;

use super::embedded::{self, EmbeddedPg};
use super::{emit, roles, Cli};
use crate::auth::TokenSigner;
use crate::config::{aex_home, AuthSettings, Secret, Settings};
use crate::domain::Scope;
use crate::ledger::{self, ChainId, NewEvent};
use crate::store::{db, tokens};

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Use this Postgres server instead of the embedded cluster.
    #[arg(long, env = "AEX_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Address the server will listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: String,
    /// Overwrite an existing aex.toml.
    #[arg(long)]
    pub force: bool,
}

const STARTER_MODELS: &str = r#"# The routing table: model aliases agents may use, where they go, and what they cost.
# Prices are decimal USD per million tokens, written as strings so they are exact.

[providers.openai]
kind = "openai"                        # any OpenAI-compatible API: OpenAI, Groq, vLLM, llama.cpp, Ollama
base_url = "https://api.openai.com/v1"
api_key_env = "OPENAI_API_KEY"         # the key is read from this environment variable
timeout_seconds = 120

[models."gpt-4o-mini"]
provider = "openai"
upstream_model = "gpt-4o-mini"
input_usd_per_million = "0.15"
output_usd_per_million = "0.60"
max_output_tokens = 16384
context_window = 128000                 # bounds stored context and files AEX cannot count
capabilities = ["chat", "streaming", "tools", "vision", "responses"]
fallbacks = []

[models."gpt-4o"]
provider = "openai"
upstream_model = "gpt-4o"
input_usd_per_million = "2.50"
output_usd_per_million = "10.00"
max_output_tokens = 16384
context_window = 128000
image_part_tokens = 1445                # high detail, 8 tiles: 85 + 8 × 170
capabilities = ["chat", "streaming", "tools", "vision", "responses"]

[models."text-embedding-3-small"]
provider = "openai"
upstream_model = "text-embedding-3-small"
input_usd_per_million = "0.02"
capabilities = ["embeddings"]
"#;

fn secret() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(48)
        .map(char::from)
        .collect()
}

/// TOML string literal (escaped).
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

pub async fn run(cli: &Cli, args: &InitArgs) -> anyhow::Result<()> {
    let home = aex_home();
    let config_path = Settings::config_path(cli.config.as_deref());
    if config_path.exists() && !args.force {
        bail!(
            "{} already exists (use --force to overwrite it)",
            config_path.display()
        );
    }
    std::fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
    // The default tools.plugin_dir: the only place process plugins are installed from.
    let plugins = home.join("plugins");
    std::fs::create_dir_all(&plugins).with_context(|| format!("creating {}", plugins.display()))?;
    let models_path = home.join("models.toml");
    if !models_path.exists() {
        std::fs::write(&models_path, STARTER_MODELS)?;
    }

    let (owner_url, embedded) = match &args.database_url {
        Some(url) => (url.clone(), false),
        None => {
            let pg = EmbeddedPg::for_home(&home)?;
            let url = if pg.exists() {
                existing_url(&config_path).context("an embedded cluster exists but aex.toml has no database_url; remove $AEX_HOME/pg to start over")?
            } else {
                pg.create()?
            };
            pg.start()?;
            embedded::create_database(&url).await?;
            (url, true)
        }
    };

    let key = secret();
    let auth = AuthSettings {
        keys: [("k1".to_owned(), Secret::new(key.clone()))]
            .into_iter()
            .collect(),
        ..AuthSettings::default()
    };
    // SPEC §10: migrations as the owner, the server as a runtime role that owns nothing.
    let runtime_url = roles::ensure_runtime_role(&owner_url, &secret()).await?;
    let runtime_role = db::migrate_as_owner(&owner_url, runtime_url.as_deref()).await?;
    if runtime_url.is_none() {
        eprintln!(
            "warning: this database role may not create roles, so the server will connect as \
             the owner of the tables; create a runtime role and set database_url to it \
             (see `aex migrate`)"
        );
    }
    let pool = db::connect(&owner_url, &crate::config::DbSettings::default())
        .await
        .context("cannot connect to the database")?;
    let signer = TokenSigner::new(&auth);
    let issued = signer.issue("operator", Scope::Operator, None, None, None)?;
    let mut tx = pool.begin().await?;
    tokens::insert_token(
        &mut tx,
        &tokens::TokenRow {
            jti: issued.claims.jti,
            tenant_id: None,
            agent_id: None,
            subject: "operator".into(),
            scope: Scope::Operator.as_str().into(),
            kid: issued.kid.clone(),
            description: Some("issued by aex init".into()),
            issued_at: chrono::Utc::now(),
            expires_at: None,
            revoked_at: None,
            revoked_reason: None,
        },
    )
    .await?;
    ledger::append(
        &mut tx,
        NewEvent {
            chain: ChainId::System,
            event_type: "token.issued",
            tenant_id: None,
            agent_id: None,
            execution_id: None,
            payload: json!({"by": "aex init", "jti": issued.claims.jti, "scope": "operator"}),
        },
    )
    .await?;
    tx.commit().await?;
    pool.close().await;

    let database_url = runtime_url.as_deref().unwrap_or(&owner_url);
    let migration_line = match &runtime_url {
        Some(_) => format!("migration_database_url = {}\n", toml_str(&owner_url)),
        None => String::new(),
    };
    let config = format!(
        "# AEX configuration, written by `aex init`. Environment variables AEX_* override it.\n\
         listen = {listen}\n\
         database_url = {db}\n\
         {migration_line}\
         models_file = {models}\n\n\
         [auth]\nactive_kid = \"k1\"\n\n[auth.keys]\nk1 = {key}\n\n\
         [cli]\nadmin_token = {token}\n",
        listen = toml_str(&args.listen),
        db = toml_str(database_url),
        models = toml_str(&models_path.to_string_lossy()),
        key = toml_str(&key),
        token = toml_str(&issued.token),
    );
    write_private(&config_path, &config)?;

    emit(
        cli.json,
        &json!({
            "operator_token": issued.token,
            "home": home,
            "config": config_path,
            "models_file": models_path,
            "embedded_database": embedded,
            "runtime_role": runtime_role,
        }),
        || {
            format!(
                "AEX initialised in {}\n  config: {}\n  models: {}\n  database: {}\noperator token (also saved in the config): {}",
                home.display(),
                config_path.display(),
                models_path.display(),
                if embedded { "embedded Postgres cluster in $AEX_HOME/pg" } else { "the server you named" },
                issued.token
            )
        },
    );
    Ok(())
}

/// The owner's database URL an earlier `aex init` wrote, if any.
fn existing_url(config_path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(config_path).ok()?;
    let value: toml::Value = text.parse().ok()?;
    value
        .get("migration_database_url")
        .or_else(|| value.get("database_url"))?
        .as_str()
        .map(str::to_owned)
}
