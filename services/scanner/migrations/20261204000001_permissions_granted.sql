-- What each tenant has not granted Picket's app, as its tokens' roles said at onboarding or at
-- the last scan; and checks not evaluated for want of a permission.
ALTER TABLE tenants ADD COLUMN missing_permissions TEXT[] NOT NULL DEFAULT '{}';
ALTER TABLE scans ADD COLUMN checks_not_evaluated INTEGER NOT NULL DEFAULT 0;
ALTER TABLE check_results DROP CONSTRAINT check_results_outcome_check;
ALTER TABLE check_results ADD CONSTRAINT check_results_outcome_check
    CHECK (outcome IN ('passed', 'failed', 'not_applicable', 'not_evaluated', 'error'));
