import Foundation
import GRDB
import Support
import Testing

@testable import ResultsStore

/// Migration v3: `options_json` values that lnlens stores as numbers and booleans become JSON
/// numbers and booleans (they were strings), the weight processing an object of booleans.
@Suite struct OptionsMigrationTests {
    /// The options of every command as lnlens wrote them before v3 (the text of its
    /// `JSONSerialization` of `[String: String]`, with `min_gap` already a number), one per run.
    static let oldOptions: [(command: String, json: String)] = [
        ("dla", #"{"batch_size":"32","bootstrap":"crossed","chunk_size":"64","db":"results\/lnlens.sqlite","min_gap":0.5,"models":"gpt2-tiny,gpt2-tiny-lnfree","prepend_bos":"true","processing":"fold_ln=true center_writing_weights=true center_unembed=true fold_value_biases=true","prompts":"prompts\/topic.jsonl","shard":"0\/2","skip_invalid":"false"}"#),
        ("dla", #"{"batch_size":"32","bootstrap":"pairs","chunk_size":"64","context":"512","db":"8","max_tokens":"all","min_gap":0.5,"models":"gpt2","prepend_bos":"false","processing":"fold_ln=false center_writing_weights=true center_unembed=false fold_value_biases=true","skip_invalid":"false","targets":"paper","text":"1e3"}"#),
        ("patch", #"{"batch_size":"16","chunk_size":"32","db":"results\/lnlens.sqlite","direction":"denoise","methods":"activation,atp","min_gap":1,"models":"gpt2-tiny","prepend_bos":"true","processing":"fold_ln=true center_writing_weights=true center_unembed=true fold_value_biases=true","prompts":"ioi","sites":"resid_pre","skip_invalid":"true"}"#),
        ("train", #"{"batch_tokens":"8192","checkpoint_every":"50","corpus":"corpus\/train.txt","db":"results\/models.sqlite","dtype":"f16","from":"","init":"scripts\/models\/gpt2-tiny.init.json","lr":"0.003","max_grad_norm":"1.0","micro_batch":"8","out":"models\/gpt2-tiny","seed":"18446744073709551615","seq_len":"128","steps":"300","weight_decay":"0.01"}"#),
        ("remove-ln", #"{"aux_weight":"0.1","batch_tokens":"8192","checkpoint_every":"50","corpus":"corpus\/train.txt","db":"results\/models.sqlite","dtype":"f16","keep_ln":"true","lr":"0.0006","max_grad_norm":"1.0","micro_batch":"8","model":"models\/gpt2-tiny","momentum":"0.9","out":"models\/gpt2-tiny-vanilla","schedule":"h.0.ln_2@20,ln_f@48","seed":"2","seq_len":"128","steps":"120","weight_decay":"1e-05"}"#),
        ("eval", #"{"batch":"8","context":"128","db":"shards\/eval-0.sqlite","models":"gpt2-tiny,gpt2-tiny-lnfree","shard":"0\/4","text":"heldout"}"#),
    ]

    /// What v3 makes of them: every listed value as a JSON number or boolean, the rest unchanged.
    static let expected: [[String: JSONKind]] = [
        ["batch_size": .integer(32), "chunk_size": .integer(64), "min_gap": .number(0.5), "prepend_bos": .bool,
         "skip_invalid": .bool, "processing": .object, "bootstrap": .string, "db": .string, "models": .string, "prompts": .string,
         "shard": .string],
        ["batch_size": .integer(32), "chunk_size": .integer(64), "context": .integer(512), "max_tokens": .string,
         "min_gap": .number(0.5), "prepend_bos": .bool, "skip_invalid": .bool, "processing": .object, "db": .string,
         "text": .string, "targets": .string, "bootstrap": .string, "models": .string],
        ["batch_size": .integer(16), "chunk_size": .integer(32), "min_gap": .integer(1), "prepend_bos": .bool, "skip_invalid": .bool,
         "processing": .object, "direction": .string, "methods": .string, "sites": .string, "prompts": .string, "db": .string,
         "models": .string],
        ["batch_tokens": .integer(8192), "checkpoint_every": .integer(50), "lr": .number(0.003), "max_grad_norm": .integer(1),
         "micro_batch": .integer(8), "seq_len": .integer(128), "steps": .integer(300), "weight_decay": .number(0.01),
         "corpus": .string, "db": .string, "dtype": .string, "from": .string, "init": .string, "out": .string],
        ["aux_weight": .number(0.1), "batch_tokens": .integer(8192), "checkpoint_every": .integer(50), "keep_ln": .bool,
         "lr": .number(0.0006), "max_grad_norm": .integer(1), "micro_batch": .integer(8), "momentum": .number(0.9),
         "seed": .integer(2), "seq_len": .integer(128), "steps": .integer(120), "weight_decay": .number(1e-5),
         "corpus": .string, "db": .string, "dtype": .string, "model": .string, "out": .string, "schedule": .string],
        ["batch": .integer(8), "context": .integer(128), "db": .string, "models": .string, "shard": .string, "text": .string],
    ]

    static func object(_ json: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
    }

    /// A database exactly as lnlens left it before v3 (schema v2, options as strings), built
    /// with the shipped migrations' own SQL.
    static func v2Database(at path: String) throws {
        let queue = try DatabaseQueue(path: path)
        try queue.write { db in
            try db.execute(sql: "CREATE TABLE grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY)")
            try db.execute(sql: Schema.v1)
            try db.execute(sql: Schema.v2)
            try db.execute(sql: "INSERT INTO grdb_migrations VALUES ('v1'), ('v2')")
            for (command, json) in oldOptions {
                try db.execute(sql: """
                    INSERT INTO runs (command, options_json, model_path, model_hash, ln_mode, processing_json, prompt_set_path,
                                      prompt_set_hash, n_prompts, tool_version, started_at, status)
                    VALUES (?, ?, 'models/gpt2-tiny', 'abc', 'layernorm', '{}', 'prompts/ioi.jsonl', 'def', 3, '0.4.0',
                            '2026-12-01 10:00:00.000', 'running')
                    """, arguments: [command, json])
            }
        }
    }

    @Test func v2OptionsBecomeJSONNumbersAndBooleans() throws {
        let temp = TempDatabasePath()
        defer { temp.cleanup() }
        try FileManager.default.createDirectory(at: temp.folder, withIntermediateDirectories: true)
        try Self.v2Database(at: temp.path)
        #expect(throws: ResultsStoreError.olderSchema(path: temp.path, version: "v2")) { try ResultsDatabase.openReadOnly(path: temp.path) }
        let db = try ResultsDatabase(path: temp.path)
        #expect(db.migrationsApplied == ["v3", "v4", "v5"])
        let runs = try db.runs()
        #expect(runs.count == Self.oldOptions.count)
        for (run, (old, expected)) in zip(runs, zip(Self.oldOptions, Self.expected)) {
            let now = try Self.object(run.optionsJSON), before = try Self.object(old.json)
            #expect(Set(now.keys) == Set(before.keys), "\(run.command)")
            for (key, kind) in expected {
                let value = try #require(now[key], "\(run.command) \(key)")
                #expect(JSONKind(value) == kind, "\(run.command) \(key): \(run.optionsJSON)")
                if kind == .string { #expect(value as? String == before[key] as? String, "\(run.command) \(key)") }
            }
        }
        // Booleans keep their value; the UInt64 seed its digits; processing reads as its flags.
        let dla = try Self.object(runs[0].optionsJSON), text = try Self.object(runs[1].optionsJSON)
        #expect(dla["prepend_bos"] as? Bool == true && dla["skip_invalid"] as? Bool == false)
        #expect(dla["processing"] as? [String: Bool] == ["fold_ln": true, "center_writing_weights": true, "center_unembed": true,
                                                          "fold_value_biases": true])
        #expect(text["processing"] as? [String: Bool] == ["fold_ln": false, "center_writing_weights": true, "center_unembed": false,
                                                           "fold_value_biases": true])
        #expect(text["db"] as? String == "8" && text["text"] as? String == "1e3", "strings of other keys stay strings")
        #expect(runs[3].optionsJSON.contains(#""seed":18446744073709551615"#), "\(runs[3].optionsJSON)")
        #expect(try Self.object(runs[4].optionsJSON)["keep_ln"] as? Bool == true)
        // Opened again: nothing left to do, and readers accept it.
        #expect(try ResultsDatabase(path: temp.path).migrationsApplied.isEmpty)
        #expect(try ResultsDatabase.openReadOnly(path: temp.path).runs().map(\.optionsJSON) == runs.map(\.optionsJSON))
    }

    /// The database written by release 0.1.0 (schema v1) goes through v2 and v3 in one opening.
    @Test func v1FixtureOptionsBecomeJSONNumbersAndBooleans() throws {
        let temp = TempDatabasePath()
        defer { temp.cleanup() }
        try FileManager.default.createDirectory(at: temp.folder, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: OpeningTests.fixtures.appendingPathComponent("v1.sqlite"), to: URL(fileURLWithPath: temp.path))
        let db = try ResultsDatabase(path: temp.path)
        #expect(db.migrationsApplied == ["v2", "v3", "v4", "v5"])
        let runs = try db.runs()
        #expect(runs.count == 3)
        for run in runs {
            let o = try Self.object(run.optionsJSON)
            #expect(JSONKind(o["batch_size"]!) == .integer(32))
            #expect(JSONKind(o["prepend_bos"]!) == .bool && o["prepend_bos"] as? Bool == false)
            #expect(JSONKind(o["skip_invalid"]!) == .bool && o["skip_invalid"] as? Bool == false)
            #expect(o["processing"] as? [String: Bool] == ["fold_ln": true, "center_writing_weights": true, "center_unembed": true,
                                                            "fold_value_biases": true])
            #expect(o["models"] is String && o["db"] is String)
        }
        #expect(JSONKind(try Self.object(runs[0].optionsJSON)["chunk_size"]!) == .integer(4))
        let text = try Self.object(runs[2].optionsJSON)
        #expect(JSONKind(text["context"]!) == .integer(128) && JSONKind(text["max_tokens"]!) == .integer(20))
        #expect(text["targets"] as? String == "next-token")
        // The results were not touched by v3.
        #expect(try db.query(sql: "SELECT COUNT(*) FROM results").rows == [[.int(1696)]])
    }
}
