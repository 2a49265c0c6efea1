import Foundation

/// The DDL of each migration, verbatim (docs/schema.md shows the same text).
enum Schema {
    static let v1 = """
        CREATE TABLE runs (
          id              INTEGER PRIMARY KEY AUTOINCREMENT,
          command         TEXT NOT NULL CHECK (command <> ''),
          options_json    TEXT NOT NULL CHECK (json_valid(options_json)),
          model_path      TEXT NOT NULL,
          model_hash      TEXT NOT NULL,
          ln_mode         TEXT NOT NULL CHECK (ln_mode IN ('layernorm', 'ln-free')),
          processing_json TEXT NOT NULL CHECK (json_valid(processing_json)),
          prompt_set_path TEXT NOT NULL,
          prompt_set_hash TEXT NOT NULL,
          n_prompts       INTEGER NOT NULL CHECK (n_prompts >= 0),
          tool_version    TEXT NOT NULL,
          started_at      TEXT NOT NULL,
          ended_at        TEXT,
          status          TEXT NOT NULL DEFAULT 'running'
                          CHECK (status IN ('running', 'completed', 'failed', 'interrupted')),
          error           TEXT,
          CHECK ((status = 'running') = (ended_at IS NULL))
        );

        CREATE TABLE run_prompts (
          run_id       INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
          prompt_index INTEGER NOT NULL CHECK (prompt_index >= 0),
          prompt       TEXT NOT NULL,
          answer       TEXT NOT NULL,
          wrong        TEXT,
          n_tokens     INTEGER NOT NULL CHECK (n_tokens > 0),
          PRIMARY KEY (run_id, prompt_index)
        ) WITHOUT ROWID;

        CREATE TABLE results (
          run_id       INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
          prompt_index INTEGER NOT NULL CHECK (prompt_index >= 0),
          component    TEXT NOT NULL CHECK (component <> ''),
          quantity     TEXT NOT NULL CHECK (quantity <> ''),
          value        REAL NOT NULL,
          PRIMARY KEY (run_id, prompt_index, component, quantity)
        ) WITHOUT ROWID;

        CREATE TABLE summaries (
          run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
          scope  TEXT NOT NULL,
          key    TEXT NOT NULL,
          metric TEXT NOT NULL,
          value  REAL,
          PRIMARY KEY (run_id, scope, key, metric)
        ) WITHOUT ROWID;

        CREATE TABLE batches_done (
          run_id       INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
          first_prompt INTEGER NOT NULL CHECK (first_prompt >= 0),
          last_prompt  INTEGER NOT NULL CHECK (last_prompt >= first_prompt),
          PRIMARY KEY (run_id, first_prompt, last_prompt)
        ) WITHOUT ROWID;
        """
}

extension Schema {
    /// v2: results keyed by site (layer, position and head as columns, NULL where a site has
    /// none), one writer per run (its owner and heartbeat), shards, the prompts' corrupt text and
    /// tokens, estimator errors, training steps. v1 rows migrate: a DLA component `L3H2` becomes
    /// site `result` layer 3 head 2, `L3_bO` site `b_O` layer 3, `L3_mlp` site `mlp_out` layer 3,
    /// and `embed`, `pos_embed`, `resid_post` keep their names as sites.
    static let v2 = """
        ALTER TABLE runs ADD COLUMN owner_host TEXT;
        ALTER TABLE runs ADD COLUMN owner_pid INTEGER;
        ALTER TABLE runs ADD COLUMN owner_start TEXT;
        ALTER TABLE runs ADD COLUMN heartbeat_at TEXT;
        ALTER TABLE runs ADD COLUMN shard_index INTEGER CHECK (shard_index >= 0);
        ALTER TABLE runs ADD COLUMN shard_count INTEGER CHECK (shard_count >= 1);

        ALTER TABLE run_prompts ADD COLUMN corrupt TEXT;
        ALTER TABLE run_prompts ADD COLUMN tokens_json TEXT CHECK (tokens_json IS NULL OR json_valid(tokens_json));

        CREATE TABLE results_v2 (
          run_id       INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
          prompt_index INTEGER NOT NULL CHECK (prompt_index >= 0),
          site         TEXT NOT NULL CHECK (site <> ''),
          layer        INTEGER CHECK (layer >= 0),
          position     INTEGER CHECK (position >= 0),
          head         INTEGER CHECK (head >= 0),
          quantity     TEXT NOT NULL CHECK (quantity <> ''),
          value        REAL NOT NULL
        );
        INSERT INTO results_v2 (run_id, prompt_index, site, layer, position, head, quantity, value)
        SELECT run_id, prompt_index,
               CASE WHEN component GLOB 'L[0-9]*H[0-9]*' THEN 'result'
                    WHEN component GLOB 'L[0-9]*_bO' THEN 'b_O'
                    WHEN component GLOB 'L[0-9]*_mlp' THEN 'mlp_out'
                    ELSE component END,
               CASE WHEN component GLOB 'L[0-9]*H[0-9]*'
                         THEN CAST(substr(component, 2, instr(component, 'H') - 2) AS INTEGER)
                    WHEN component GLOB 'L[0-9]*_bO' OR component GLOB 'L[0-9]*_mlp'
                         THEN CAST(substr(component, 2, instr(component, '_') - 2) AS INTEGER) END,
               NULL,
               CASE WHEN component GLOB 'L[0-9]*H[0-9]*'
                         THEN CAST(substr(component, instr(component, 'H') + 1) AS INTEGER) END,
               quantity, value
        FROM results;
        DROP TABLE results;
        ALTER TABLE results_v2 RENAME TO results;
        CREATE UNIQUE INDEX results_key ON results
          (run_id, prompt_index, site, ifnull(layer, -1), ifnull(position, -1), ifnull(head, -1), quantity);

        CREATE TABLE estimator_errors (
          run_id     INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
          site       TEXT NOT NULL CHECK (site <> ''),
          method     TEXT NOT NULL CHECK (method <> ''),
          layer      INTEGER CHECK (layer >= 0),
          normalized INTEGER NOT NULL CHECK (normalized IN (0, 1)),
          metric     TEXT NOT NULL CHECK (metric <> ''),
          value      REAL
        );
        CREATE UNIQUE INDEX estimator_errors_key ON estimator_errors
          (run_id, site, method, ifnull(layer, -1), normalized, metric);

        CREATE TABLE train_steps (
          run_id    INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
          step      INTEGER NOT NULL CHECK (step >= 0),
          loss      REAL NOT NULL,
          aux_loss  REAL,
          lr        REAL NOT NULL,
          grad_norm REAL,
          tokens    INTEGER NOT NULL CHECK (tokens >= 0),
          seconds   REAL,
          event     TEXT,
          PRIMARY KEY (run_id, step)
        ) WITHOUT ROWID;

        CREATE TABLE run_shards (
          run_id        INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
          shard_index   INTEGER NOT NULL CHECK (shard_index >= 0),
          shard_count   INTEGER NOT NULL CHECK (shard_count >= 1 AND shard_index < shard_count),
          source_path   TEXT NOT NULL,
          source_run_id INTEGER NOT NULL,
          owner_host    TEXT,
          started_at    TEXT NOT NULL,
          ended_at      TEXT,
          n_prompts     INTEGER NOT NULL CHECK (n_prompts >= 0),
          PRIMARY KEY (run_id, shard_index)
        ) WITHOUT ROWID;
        """

    /// Options as JSON values: runs written before it stored numbers and booleans as strings
    /// ("8", "true") and the weight processing as one string ("fold_ln=true center_writing_weights=true
    /// …"); this rewrites those values of the options lnlens stores as numbers or booleans (the
    /// keys listed) into JSON numbers and booleans, and `processing` into an object of booleans.
    /// Any other value is kept as it is.
    static let v3 = """
        UPDATE runs SET options_json = (
          SELECT json_group_object(key, CASE
            WHEN type = 'text' AND key = 'processing' AND atom GLOB 'fold_ln=*' THEN json_object(
              'center_unembed', json(CASE WHEN instr(atom, 'center_unembed=true') THEN 'true' ELSE 'false' END),
              'center_writing_weights', json(CASE WHEN instr(atom, 'center_writing_weights=true') THEN 'true' ELSE 'false' END),
              'fold_ln', json(CASE WHEN instr(atom, 'fold_ln=true') THEN 'true' ELSE 'false' END),
              'fold_value_biases', json(CASE WHEN instr(atom, 'fold_value_biases=true') THEN 'true' ELSE 'false' END))
            WHEN type = 'text' AND key IN ('aux_weight', 'batch', 'batch_size', 'batch_tokens', 'checkpoint_every', 'chunk_size',
                                           'context', 'keep_ln', 'lr', 'max_grad_norm', 'max_tokens', 'micro_batch', 'min_gap',
                                           'momentum', 'prepend_bos', 'seed', 'seq_len', 'skip_invalid', 'steps', 'weight_decay')
                 AND CASE WHEN atom IN ('true', 'false') THEN 1
                          WHEN atom = '' OR atom GLOB '*[^0-9eE.+-]*' THEN 0
                          WHEN json_valid(atom) THEN json_type(atom) IN ('integer', 'real')
                          ELSE 0 END
              THEN json(atom)
            WHEN type = 'true' THEN json('true')
            WHEN type = 'false' THEN json('false')
            WHEN type IN ('object', 'array') THEN json(value)
            ELSE value END)
          FROM json_each(runs.options_json))
        WHERE json_type(options_json) = 'object';
        """
}

extension Schema {
    /// v4 (issue 21's "schema v3"): edge scores of `edges` runs, one row per (run, prompt,
    /// upstream node, downstream node, q/k/v input, method). `prompt_index` NULL marks the run's
    /// aggregate row (the mean over `n_prompts` prompts, written when the run completes); per-prompt
    /// rows have `n_prompts` NULL. Node names are hannamw/EAP-IG's (`input`, `a3.h2`, `m3`,
    /// `logits`); `input` is a head's input (`q`, `k`, `v`) and NULL for an MLP's or the logits'.
    static let v4 = """
        CREATE TABLE edges (
          run_id       INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
          prompt_index INTEGER CHECK (prompt_index >= 0),
          upstream     TEXT NOT NULL CHECK (upstream <> ''),
          downstream   TEXT NOT NULL CHECK (downstream <> ''),
          input        TEXT CHECK (input IN ('q', 'k', 'v')),
          method       TEXT NOT NULL CHECK (method <> ''),
          value        REAL NOT NULL,
          n_prompts    INTEGER CHECK (n_prompts >= 1),
          CHECK ((prompt_index IS NULL) = (n_prompts IS NOT NULL))
        );
        CREATE UNIQUE INDEX edges_key ON edges
          (run_id, ifnull(prompt_index, -1), upstream, downstream, ifnull(input, ''), method);
        """
}

extension Schema {
    /// v5: circuits of `circuit` runs (`lnlens circuit`). `faithfulness`: one row per (run,
    /// method, selection, requested size or threshold): the edges the circuit kept after pruning,
    /// the mean over the run's prompts of the circuit's metric and of the clean and corrupted runs'
    /// metric, and the normalised faithfulness (metric − corrupt) / (clean − corrupt) of those
    /// means (NULL when clean = corrupt). `circuit_edges`: the edges of each of those circuits,
    /// with the score they were selected by. Node names as in `edges`.
    static let v5 = """
        CREATE TABLE faithfulness (
          run_id     INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
          method     TEXT NOT NULL CHECK (method <> ''),
          selection  TEXT NOT NULL CHECK (selection IN ('top', 'greedy', 'threshold')),
          requested  REAL NOT NULL,
          edges      INTEGER NOT NULL CHECK (edges >= 0),
          metric     REAL NOT NULL,
          clean      REAL NOT NULL,
          corrupt    REAL NOT NULL,
          normalized REAL,
          n_prompts  INTEGER NOT NULL CHECK (n_prompts >= 1),
          PRIMARY KEY (run_id, method, selection, requested)
        ) WITHOUT ROWID;

        CREATE TABLE circuit_edges (
          run_id     INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
          method     TEXT NOT NULL CHECK (method <> ''),
          selection  TEXT NOT NULL CHECK (selection IN ('top', 'greedy', 'threshold')),
          requested  REAL NOT NULL,
          upstream   TEXT NOT NULL CHECK (upstream <> ''),
          downstream TEXT NOT NULL CHECK (downstream <> ''),
          input      TEXT CHECK (input IN ('q', 'k', 'v')),
          score      REAL NOT NULL
        );
        CREATE UNIQUE INDEX circuit_edges_key ON circuit_edges
          (run_id, method, selection, requested, upstream, downstream, ifnull(input, ''));
        """
}
