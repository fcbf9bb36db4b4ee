-- ListCases by case id (the mediation room polls for an offered case by its case id):
-- served by an index instead of reading every case of the agency.
CREATE INDEX mediation_cases_case ON mediation_cases (agency, case_id);
