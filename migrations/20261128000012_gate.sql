-- The judge as the gate (issue 30): an effect nothing independent scored (`unscored`) and one
-- whose untrusted inputs read as instructions or spam (`suspicious_input`) wait for a person.
alter table reviews drop constraint reviews_risk_types_check;
alter table reviews add constraint reviews_risk_types_check
    check (risk_types <@ array['sensitive', 'medium_confidence', 'missing_disclosure',
                               'financial', 'failed_after_retries', 'unscored',
                               'suspicious_input']::text[]);
