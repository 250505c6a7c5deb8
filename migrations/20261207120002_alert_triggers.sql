-- The facts that raise alerts, as triggers on the rows they change: whichever function or
-- statement moves an agent's money or state (a settlement, the reconciler, an admin action),
-- the alert is written in that same transaction, and the gateway's SQL (aex_settle, aex_hold)
-- stays as it is. Each trigger's WHEN clause keeps the common case (no crossing) out of plpgsql.

-- An agent's spent crossed a threshold of its budget in its current period. Settlements of one
-- agent are serialised by its row lock, so each crossing is seen by exactly one of them;
-- `alerts_once` keys it by period and budget (a top-up that lowers the ratio lets it fire again
-- at the new budget).
CREATE FUNCTION aex_alert_agent_budget() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_rule record;
    t integer;
BEGIN
    v_rule := aex_alert_rule(NEW.tenant_id, 'agent_budget');
    IF NOT v_rule.enabled THEN
        RETURN NULL;
    END IF;
    FOR t IN SELECT aex_crossed(v_rule.thresholds,
                                CASE WHEN OLD.period_started_at = NEW.period_started_at
                                     THEN OLD.spent_micro_usd ELSE 0 END,
                                OLD.budget_micro_usd, NEW.spent_micro_usd, NEW.budget_micro_usd)
    LOOP
        PERFORM aex_raise_alert(
            NEW.tenant_id, NEW.id, 'agent_budget', aex_alert_severity(t), 'agent:' || NEW.id,
            NEW.budget_period || ':' || to_char(NEW.period_started_at AT TIME ZONE 'UTC',
                                                'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                || ':budget=' || NEW.budget_micro_usd,
            t, format('agent %s has spent %s%% of its budget', NEW.name, t),
            jsonb_build_object('agent_name', NEW.name, 'threshold_percent', t,
                               'spent_micro_usd', NEW.spent_micro_usd,
                               'budget_micro_usd', NEW.budget_micro_usd,
                               'budget_period', NEW.budget_period,
                               'period_started_at', NEW.period_started_at));
    END LOOP;
    RETURN NULL;
END;
$$;

CREATE TRIGGER agents_budget_alerts
    AFTER UPDATE OF spent_micro_usd, budget_micro_usd ON agents
    FOR EACH ROW
    WHEN (NEW.budget_micro_usd > 0
          AND floor(NEW.spent_micro_usd::numeric * 100 / NEW.budget_micro_usd)
              > CASE WHEN OLD.budget_micro_usd > 0
                     THEN floor(OLD.spent_micro_usd::numeric * 100 / OLD.budget_micro_usd)
                     ELSE -1 END)
    EXECUTE FUNCTION aex_alert_agent_budget();

-- A tenant's spent (the sum of its agents' lifetime counters) crossed a threshold of its
-- budget. Settlements of a tenant with a budget hold the tenant row (aex_settle moves its
-- `reserved` first), so they are serialised and the sum read here sees every earlier one.
CREATE FUNCTION aex_alert_tenant_budget() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_budget bigint;
    v_name text;
    v_rule record;
    v_after numeric;
    v_before numeric;
    t integer;
BEGIN
    SELECT budget_micro_usd, name INTO v_budget, v_name FROM tenants WHERE id = NEW.tenant_id;
    IF v_budget IS NULL OR v_budget <= 0 THEN
        RETURN NULL;
    END IF;
    v_rule := aex_alert_rule(NEW.tenant_id, 'tenant_budget');
    IF NOT v_rule.enabled THEN
        RETURN NULL;
    END IF;
    SELECT COALESCE(sum(lifetime_spent_micro_usd), 0) INTO v_after
    FROM agents WHERE tenant_id = NEW.tenant_id;
    v_before := v_after - (NEW.lifetime_spent_micro_usd - OLD.lifetime_spent_micro_usd);
    FOR t IN SELECT aex_crossed(v_rule.thresholds, v_before, v_budget, v_after, v_budget) LOOP
        PERFORM aex_raise_alert(
            NEW.tenant_id, NULL, 'tenant_budget', aex_alert_severity(t),
            'tenant:' || NEW.tenant_id, 'lifetime:budget=' || v_budget, t,
            format('tenant %s has spent %s%% of its budget', v_name, t),
            jsonb_build_object('tenant_name', v_name, 'threshold_percent', t,
                               'spent_micro_usd', v_after, 'budget_micro_usd', v_budget,
                               'agent_id', NEW.id));
    END LOOP;
    RETURN NULL;
END;
$$;

CREATE TRIGGER agents_tenant_budget_alerts
    AFTER UPDATE OF lifetime_spent_micro_usd ON agents
    FOR EACH ROW
    WHEN (NEW.lifetime_spent_micro_usd > OLD.lifetime_spent_micro_usd)
    EXECUTE FUNCTION aex_alert_tenant_budget();

-- An agent moved into QUARANTINED or ERROR_RECOVERY (each transition is its own occurrence).
CREATE FUNCTION aex_alert_lifecycle() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM aex_raise_alert(
        NEW.tenant_id, NEW.id, 'lifecycle',
        CASE WHEN NEW.state = 'QUARANTINED' THEN 'critical' ELSE 'warning' END,
        'agent:' || NEW.id, 'transaction:' || txid_current(), 0,
        format('agent %s moved from %s to %s', NEW.name, OLD.state, NEW.state),
        jsonb_build_object('agent_name', NEW.name, 'from', OLD.state, 'to', NEW.state));
    RETURN NULL;
END;
$$;

CREATE TRIGGER agents_lifecycle_alerts
    AFTER UPDATE OF state ON agents
    FOR EACH ROW
    WHEN (NEW.state IS DISTINCT FROM OLD.state AND NEW.state IN ('QUARANTINED', 'ERROR_RECOVERY'))
    EXECUTE FUNCTION aex_alert_lifecycle();

-- A call refused for budget (402). Once per agent, budget period and budget: the refusals that
-- follow until a top-up are the same news.
CREATE FUNCTION aex_alert_budget_refusal() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    a record;
BEGIN
    SELECT name, budget_micro_usd, spent_micro_usd, reserved_micro_usd, budget_period,
           period_started_at
        INTO a FROM agents WHERE id = NEW.agent_id;
    PERFORM aex_raise_alert(
        NEW.tenant_id, NEW.agent_id, 'budget_refusal', 'critical', 'agent:' || NEW.agent_id,
        a.budget_period || ':' || to_char(a.period_started_at AT TIME ZONE 'UTC',
                                          'YYYY-MM-DD"T"HH24:MI:SS"Z"')
            || ':budget=' || a.budget_micro_usd,
        0, format('agent %s was refused a call for insufficient budget', a.name),
        jsonb_build_object('agent_name', a.name, 'execution_id', NEW.execution_key,
                           'model', NEW.model_alias, 'budget_micro_usd', a.budget_micro_usd,
                           'spent_micro_usd', a.spent_micro_usd,
                           'reserved_micro_usd', a.reserved_micro_usd));
    RETURN NULL;
END;
$$;

CREATE TRIGGER executions_refusal_alerts
    AFTER INSERT OR UPDATE OF state ON executions
    FOR EACH ROW
    WHEN (NEW.state = 'DENIED' AND NEW.reason = 'insufficient_budget')
    EXECUTE FUNCTION aex_alert_budget_refusal();

-- A commit above its hold (the provider billed beyond the caps AEX sent, or AEX's own error).
CREATE FUNCTION aex_alert_overrun() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_key text;
BEGIN
    SELECT execution_key INTO v_key FROM executions WHERE id = NEW.execution_id;
    PERFORM aex_raise_alert(
        NEW.tenant_id, NEW.agent_id, 'overrun', 'warning', 'agent:' || NEW.agent_id,
        'reservation:' || NEW.id, 0,
        format('execution %s cost %s micro-USD, above its hold of %s', v_key,
               NEW.actual_micro_usd, NEW.estimate_micro_usd),
        jsonb_build_object('execution_id', v_key, 'attempt', NEW.attempt,
                           'estimate_micro_usd', NEW.estimate_micro_usd,
                           'actual_micro_usd', NEW.actual_micro_usd));
    RETURN NULL;
END;
$$;

CREATE TRIGGER reservations_overrun_alerts
    AFTER UPDATE OF state ON reservations
    FOR EACH ROW
    WHEN (NEW.state = 'COMMITTED' AND NEW.actual_micro_usd > NEW.estimate_micro_usd)
    EXECUTE FUNCTION aex_alert_overrun();
