BEGIN TRANSACTION;
CREATE TABLE annotation (
            id TEXT PRIMARY KEY,
            evaluation_id TEXT NOT NULL REFERENCES evaluation (id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            label TEXT NOT NULL,
            text TEXT NOT NULL,
            explanation TEXT,
            message_part_index INTEGER NOT NULL,
            start_offset INTEGER NOT NULL,
            end_offset INTEGER NOT NULL,
            tool_name TEXT,
            parameter_name TEXT
        );
INSERT INTO "annotation" VALUES('an-1','ev-1',0,'fact','Spain','wrong',0,12,17,NULL,NULL);
CREATE TABLE batch_job (
            id TEXT PRIMARY KEY,
            experiment_id TEXT NOT NULL REFERENCES experiment (id) ON DELETE CASCADE,
            role TEXT NOT NULL,
            model TEXT NOT NULL,
            api_base TEXT,
            provider TEXT NOT NULL,
            provider_batch_id TEXT NOT NULL,
            input_file_id TEXT NOT NULL,
            status TEXT NOT NULL,
            request_count INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            collected_at TEXT,
            error_message TEXT
        );
INSERT INTO "batch_job" VALUES('b1','exp-1','target','target',NULL,'openai','pb','f','in_progress',1,'2026-01-02T03:04:05.000000Z','2026-01-02T03:04:05.000000Z',NULL,NULL);
CREATE TABLE batch_request (
            batch_id TEXT NOT NULL REFERENCES batch_job (id) ON DELETE CASCADE,
            custom_id TEXT NOT NULL,
            item_id TEXT NOT NULL REFERENCES item (id) ON DELETE CASCADE,
            mode TEXT NOT NULL,
            cache_key TEXT NOT NULL,
            body JSON NOT NULL,
            status TEXT NOT NULL DEFAULT 'submitted',
            PRIMARY KEY (batch_id, custom_id)
        );
INSERT INTO "batch_request" VALUES('b1','c1','it-2','json_schema','k2','{"model": "target"}','submitted');
CREATE TABLE conversation (
            id TEXT PRIMARY KEY,
            type TEXT NOT NULL DEFAULT 'source',
            content_hash TEXT NOT NULL,
            created_at TEXT NOT NULL
        , experiment_id TEXT, tools JSON, metadata JSON);
INSERT INTO "conversation" VALUES('src-1','source','h1','2026-01-02T03:04:05.000000Z',NULL,'[{"type": "function", "function": {"name": "lookup"}}]','{"team": "a"}');
INSERT INTO "conversation" VALUES('src-2','source','h2','2026-01-02T03:04:05.000000Z',NULL,NULL,NULL);
INSERT INTO "conversation" VALUES('res-1','result','h3','2026-01-02T03:04:05.000000Z','exp-1',NULL,NULL);
CREATE TABLE evaluation (
            id TEXT PRIMARY KEY,
            item_id TEXT NOT NULL REFERENCES item (id) ON DELETE CASCADE,
            message_id TEXT NOT NULL REFERENCES message (id) ON DELETE CASCADE,
            status TEXT NOT NULL,
            model TEXT NOT NULL,
            input_tokens INTEGER,
            output_tokens INTEGER,
            detection_duration_ms FLOAT,
            total_duration_ms FLOAT,
            error_message TEXT,
            created_at TEXT NOT NULL, dropped JSON, cost_usd FLOAT, response_format TEXT, cached_calls INTEGER NOT NULL DEFAULT 0, cost_saved_usd FLOAT,
            UNIQUE (item_id, message_id)
        );
INSERT INTO "evaluation" VALUES('ev-1','it-1','m5','completed','judge',10,5,NULL,12.5,NULL,'2026-01-02T03:04:05.000000Z','{"not_found": 1}',0.01,'json_schema',1,0.01);
CREATE TABLE experiment (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            model TEXT NOT NULL,
            pass_through BOOLEAN NOT NULL DEFAULT 0,
            conversation_ids JSON NOT NULL,
            reasoning_config JSON,
            system_prompt_override TEXT,
            output_schema JSON,
            created_by_user_id TEXT,
            created_by_user_name TEXT,
            created_by_service_account_id TEXT,
            created_by_service_account_name TEXT,
            created_at TEXT NOT NULL,
            completed_at TEXT
        , api_base TEXT, evaluator_model TEXT, evaluator_api_base TEXT, labels JSON, source_experiment_id TEXT, structured_output JSON, stop_reason TEXT, stop_detail TEXT, stopped_at TEXT, runner TEXT, max_cost_usd FLOAT, setting_changes JSON);
INSERT INTO "experiment" VALUES('exp-1','first','target',0,'["src-1", "src-2"]',NULL,NULL,NULL,NULL,NULL,NULL,NULL,'2026-01-02T03:04:05.000000Z',NULL,'http://127.0.0.1:9/v1','judge',NULL,'{"labels": [{"name": "fact", "description": "A claim the context contradicts"}]}',NULL,'{"target": {"setting": "auto"}}','interrupted','Ctrl-C','2026-01-02T03:04:05.000000Z','cli',2.5,'[]');
CREATE TABLE item (
            id TEXT PRIMARY KEY,
            experiment_id TEXT NOT NULL REFERENCES experiment (id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            source_conversation_id TEXT NOT NULL REFERENCES conversation (id),
            result_conversation_id TEXT REFERENCES conversation (id),
            status TEXT NOT NULL DEFAULT 'pending',
            error_message TEXT,
            evaluations_expected INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
INSERT INTO "item" VALUES('it-1','exp-1',0,'src-1','res-1','completed',NULL,1,'2026-01-02T03:04:05.000000Z','2026-01-02T03:04:05.000000Z');
INSERT INTO "item" VALUES('it-2','exp-1',1,'src-2',NULL,'pending',NULL,0,'2026-01-02T03:04:05.000000Z','2026-01-02T03:04:05.000000Z');
CREATE TABLE message (
            id TEXT PRIMARY KEY,
            conversation_id TEXT NOT NULL REFERENCES conversation (id) ON DELETE CASCADE,
            sequence_number INTEGER NOT NULL,
            role TEXT NOT NULL,
            parts JSON NOT NULL,
            generation JSON,
            UNIQUE (conversation_id, sequence_number)
        );
INSERT INTO "message" VALUES('m1','src-1',0,'user','[{"type": "text", "content": "hi"}]',NULL);
INSERT INTO "message" VALUES('m2','src-1',1,'assistant','[{"type": "text", "content": "hello"}]','{"model": "m", "cost_usd": 0.5}');
INSERT INTO "message" VALUES('m3','src-2',0,'user','[{"type": "text", "content": "yo"}]',NULL);
INSERT INTO "message" VALUES('m4','res-1',0,'user','[{"type": "text", "content": "hi"}]',NULL);
INSERT INTO "message" VALUES('m5','res-1',1,'assistant','[{"type": "text", "content": "Paris is in Spain"}]','{"model": "target", "cost_usd": 0.25, "cache_hit": true, "cost_saved_usd": 0.25}');
CREATE TABLE response_cache (
            key TEXT PRIMARY KEY,
            model TEXT NOT NULL,
            api_base TEXT,
            parts JSON NOT NULL,
            generation JSON NOT NULL,
            duration_ms FLOAT NOT NULL,
            cost_usd FLOAT,
            created_at TEXT NOT NULL,
            hits INTEGER NOT NULL DEFAULT 0,
            saved_usd FLOAT NOT NULL DEFAULT 0,
            last_hit_at TEXT
        );
INSERT INTO "response_cache" VALUES('k1','target',NULL,'[{"type": "text", "content": "cached"}]','{"cost_usd": 0.25}',3.0,0.25,'2026-01-02T03:04:05.000000Z',2,0.5,NULL);
CREATE TABLE run_lease (
            experiment_id TEXT PRIMARY KEY REFERENCES experiment (id) ON DELETE CASCADE,
            owner TEXT NOT NULL,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            acquired_at TEXT NOT NULL,
            heartbeat_at FLOAT NOT NULL
        );
INSERT INTO "run_lease" VALUES('exp-1','o1','h',1,'2026-01-02T03:04:05.000000Z',1.5);
CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL);
INSERT INTO "schema_migrations" VALUES(1,'m001_initial','2026-12-05T06:39:56.124405Z');
INSERT INTO "schema_migrations" VALUES(2,'m002_run_settings','2026-12-05T06:39:56.125894Z');
INSERT INTO "schema_migrations" VALUES(3,'m003_structured_output','2026-12-05T06:39:56.126532Z');
INSERT INTO "schema_migrations" VALUES(4,'m004_run_leases','2026-12-05T06:39:56.127049Z');
INSERT INTO "schema_migrations" VALUES(5,'m005_run_state','2026-12-05T06:39:56.127901Z');
INSERT INTO "schema_migrations" VALUES(6,'m006_conversation_tools','2026-12-05T06:39:56.128319Z');
INSERT INTO "schema_migrations" VALUES(7,'m007_cache_and_batches','2026-12-05T06:39:56.129076Z');
CREATE INDEX ix_conversation_type ON conversation (type);
CREATE INDEX ix_message_conversation_id ON message (conversation_id);
CREATE INDEX ix_experiment_created_at ON experiment (created_at);
CREATE INDEX ix_item_experiment_position ON item (experiment_id, position);
CREATE INDEX ix_item_experiment_status ON item (experiment_id, status);
CREATE INDEX ix_item_source_conversation_id ON item (source_conversation_id);
CREATE INDEX ix_item_result_conversation_id ON item (result_conversation_id);
CREATE INDEX ix_evaluation_item_id ON evaluation (item_id);
CREATE INDEX ix_evaluation_message_id ON evaluation (message_id);
CREATE INDEX ix_annotation_evaluation_id ON annotation (evaluation_id);
CREATE INDEX ix_conversation_experiment_id ON conversation (experiment_id);
CREATE INDEX ix_response_cache_created_at ON response_cache (created_at);
CREATE INDEX ix_batch_job_experiment_id ON batch_job (experiment_id);
CREATE INDEX ix_batch_request_item_id ON batch_request (item_id);
COMMIT;
