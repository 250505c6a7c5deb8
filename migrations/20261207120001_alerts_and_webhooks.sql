-- Alerts and their webhook deliveries (issue 19).
--
-- An alert is raised by `aex_raise_alert`, in the transaction of the fact that caused it (a
-- settlement that crossed a budget threshold, a refusal, a state change), and fires once per
-- crossing: `alerts_once` is unique on (kind, subject, period, threshold), so a second replica
-- (or a second settlement) that sees the same crossing inserts nothing. The same function writes
-- one outbox row per subscribed webhook (`webhook_deliveries`), so a committed fact always has
-- its deliveries and a rolled-back one has none; every replica's delivery worker claims them.

-- Per-tenant rules; a kind without a row uses the defaults (enabled; budget thresholds 50, 80
-- and 100 percent).
CREATE TABLE alert_rules (
    tenant_id   UUID NOT NULL REFERENCES tenants (id),
    kind        TEXT NOT NULL,
    enabled     BOOLEAN NOT NULL,
    -- Percentages of the budget, for the budget kinds (NULL: the defaults).
    thresholds  INTEGER[],
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT alert_rules_pkey PRIMARY KEY (tenant_id, kind)
);

CREATE TABLE alerts (
    id          BIGSERIAL PRIMARY KEY,
    -- NULL for alerts about the installation (a replica lost): operators only.
    tenant_id   UUID REFERENCES tenants (id),
    agent_id    UUID,
    kind        TEXT NOT NULL CONSTRAINT alerts_kind_known CHECK (kind IN (
                    'agent_budget', 'tenant_budget', 'budget_refusal', 'lifecycle', 'overrun',
                    'ledger_verification', 'replica_lost', 'stale_reservation')),
    severity    TEXT NOT NULL
                CONSTRAINT alerts_severity_known CHECK (severity IN ('critical', 'warning', 'info')),
    -- What it is about: `agent:<id>`, `tenant:<id>`, `replica:<id>`, `chain:<id>`. Deliveries of
    -- one subject reach a webhook in the order the alerts were raised.
    subject     TEXT NOT NULL,
    -- Which crossing: the budget period and budget for thresholds, the occurrence otherwise.
    period      TEXT NOT NULL,
    threshold   INTEGER NOT NULL DEFAULT 0,
    message     TEXT NOT NULL,
    details     JSONB NOT NULL DEFAULT '{}'::jsonb,
    -- The moment of the insert (not the transaction's start), for delivery latency.
    created_at  TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    acked_at    TIMESTAMPTZ,
    acked_by    TEXT,
    CONSTRAINT alerts_once UNIQUE (kind, subject, period, threshold)
);

CREATE INDEX alerts_tenant_idx ON alerts (tenant_id, id);
CREATE INDEX alerts_open_idx ON alerts (tenant_id, id) WHERE acked_at IS NULL;

CREATE TABLE webhooks (
    id              UUID PRIMARY KEY,
    -- NULL: an operator's webhook, sent every tenant's alerts and the installation's.
    tenant_id       UUID REFERENCES tenants (id),
    url             TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    -- Event types sent (`alert.agent_budget`, …); NULL: all of them.
    event_types     TEXT[],
    enabled         BOOLEAN NOT NULL DEFAULT true,
    -- Standard Webhooks secret, `whsec_` + base64. The previous one still signs (a second
    -- signature) until `previous_secret_until`, so receivers can rotate without losing any.
    secret          TEXT NOT NULL,
    previous_secret TEXT,
    previous_secret_until TIMESTAMPTZ,
    created_by      TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX webhooks_tenant_idx ON webhooks (tenant_id);

-- The outbox: one row per (alert, webhook), written with the alert. The body is fixed at
-- creation, so every attempt sends the same bytes under the same `webhook-id`.
CREATE TABLE webhook_deliveries (
    id              UUID PRIMARY KEY,
    seq             BIGSERIAL CONSTRAINT webhook_deliveries_seq_key UNIQUE,
    webhook_id      UUID NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    tenant_id       UUID,
    alert_id        BIGINT REFERENCES alerts (id),
    event_type      TEXT NOT NULL,
    order_key       TEXT NOT NULL,
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending' CONSTRAINT webhook_deliveries_state_known
                    CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    -- A worker that claimed the row owns it until then (a lost replica's claim expires).
    lease_until     TIMESTAMPTZ,
    last_error      TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    delivered_at    TIMESTAMPTZ
);

CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_line_idx ON webhook_deliveries (webhook_id, order_key, seq)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_webhook_idx ON webhook_deliveries (webhook_id, seq);

CREATE TABLE webhook_attempts (
    id              BIGSERIAL PRIMARY KEY,
    delivery_id     UUID NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt         INTEGER NOT NULL,
    replica_id      UUID,
    started_at      TIMESTAMPTZ NOT NULL,
    duration_ms     BIGINT NOT NULL,
    status_code     INTEGER,
    error           TEXT
);

CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id, id);

-- Whether the tenant's rule for `kind` is on, and its thresholds (defaults without a row).
CREATE FUNCTION aex_alert_rule(p_tenant_id uuid, p_kind text,
                               OUT enabled boolean, OUT thresholds integer[])
LANGUAGE plpgsql STABLE AS $$
BEGIN
    SELECT r.enabled, r.thresholds INTO enabled, thresholds
    FROM alert_rules r WHERE r.tenant_id = p_tenant_id AND r.kind = p_kind;
    enabled := COALESCE(enabled, true);
    thresholds := COALESCE(thresholds, ARRAY[50, 80, 100]);
END;
$$;

-- Raises an alert once (NULL when it was raised before, or its rule is off) and queues its
-- deliveries, in the caller's transaction.
CREATE FUNCTION aex_raise_alert(
    p_tenant_id uuid, p_agent_id uuid, p_kind text, p_severity text, p_subject text,
    p_period text, p_threshold integer, p_message text, p_details jsonb
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
    v_created timestamptz;
    v_body text;
BEGIN
    IF p_tenant_id IS NOT NULL AND NOT (aex_alert_rule(p_tenant_id, p_kind)).enabled THEN
        RETURN NULL;
    END IF;
    INSERT INTO alerts (tenant_id, agent_id, kind, severity, subject, period, threshold, message,
                        details)
    VALUES (p_tenant_id, p_agent_id, p_kind, p_severity, p_subject, p_period, p_threshold,
            p_message, p_details)
    ON CONFLICT ON CONSTRAINT alerts_once DO NOTHING
    RETURNING id, created_at INTO v_id, v_created;
    IF v_id IS NULL THEN
        RETURN NULL;
    END IF;
    v_body := jsonb_build_object(
        'type', 'alert.' || p_kind,
        'timestamp', to_char(v_created AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'data', jsonb_build_object(
            'id', v_id, 'kind', p_kind, 'severity', p_severity, 'tenant_id', p_tenant_id,
            'agent_id', p_agent_id, 'subject', p_subject, 'threshold', p_threshold,
            'message', p_message, 'details', p_details,
            'created_at', to_char(v_created AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
    )::text;
    INSERT INTO webhook_deliveries (id, webhook_id, tenant_id, alert_id, event_type, order_key,
                                    payload)
    SELECT gen_random_uuid(), w.id, p_tenant_id, v_id, 'alert.' || p_kind, p_subject, v_body
    FROM webhooks w
    WHERE w.enabled AND (w.tenant_id = p_tenant_id OR w.tenant_id IS NULL)
      AND (w.event_types IS NULL OR 'alert.' || p_kind = ANY (w.event_types));
    IF FOUND THEN
        -- Wakes every replica's delivery worker once this commits.
        PERFORM pg_notify('aex_webhooks', '');
    END IF;
    RETURN v_id;
END;
$$;

CREATE FUNCTION aex_alert_severity(p_threshold integer) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_threshold >= 100 THEN 'critical' WHEN p_threshold >= 80 THEN 'warning'
                ELSE 'info' END
$$;

-- `p_before` → `p_after` (spent over budget, as percentages) crossed these thresholds.
CREATE FUNCTION aex_crossed(p_thresholds integer[], p_spent_before numeric, p_budget_before numeric,
                            p_spent_after numeric, p_budget_after numeric)
RETURNS SETOF integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT t FROM unnest(p_thresholds) AS t
    WHERE p_budget_after > 0 AND p_spent_after * 100 >= t * p_budget_after
      AND (p_budget_before <= 0 OR p_spent_before * 100 < t * p_budget_before)
    ORDER BY t
$$;
