import Analysis
import Foundation
import Jobs
import Testing

/// The one reader of stored options: values read the same however they were parsed or stored
/// (the run-options fuzz target found nested objects reading differently on each parse).
@Suite struct RunOptionsTests {
    @Test func valuesAreCanonical() {
        let nested = #"{"model": {"b": 1, "a": [2, {"y": 3, "x": 4}]}, "db": "x.sqlite"}"#
        let first = RunOptions.values(nested)
        for _ in 0..<20 { #expect(RunOptions.values(nested)["model"] == first["model"]) }
        #expect(first["model"] == #"{"a":[2,{"x":4,"y":3}],"b":1}"#)
        // Numbers and booleans match the same values stored as text by older lnlens.
        let old = RunOptions.values(#"{"context": "128", "prepend_bos": "true", "min_gap": "0.5"}"#)
        let new = RunOptions.values(#"{"context": 128, "prepend_bos": true, "min_gap": 0.5}"#)
        #expect(old == new, "\(old) vs \(new)")
        #expect(RunOptions.values(#"{"a": 1, "b": 2}"#, keys: ["b", "c"]) == ["b": "2"])
        #expect(RunOptions.values("not json").isEmpty)
    }
}

/// The typed options of each job: stored as the text lnlens stored before they were typed (the
/// `JSONSerialization` of a dictionary, keys sorted), read back from that text and from the
/// strings of runs before schema v3, and compared by computation only.
@Suite struct JobOptionsTests {
    static let processing = ["fold_ln": true, "center_writing_weights": true, "center_unembed": true, "fold_value_biases": true]

    @Test func dlaOptionsStoreAsBefore() {
        var o = DLAOptions()
        (o.record.models, o.record.db, o.record.processing) = ("gpt2-tiny,gpt2-tiny-lnfree", "results/lnlens.sqlite", Self.processing)
        (o.computation.batchSize, o.computation.chunkSize, o.computation.skipInvalid, o.computation.prependBOS) = (32, 64, false, true)
        (o.computation.minGap, o.computation.bootstrap, o.record.prompts, o.record.shard) = (0.5, "crossed", "prompts/topic.jsonl", "0/2")
        let before: [String: Any] = [
            "models": "gpt2-tiny,gpt2-tiny-lnfree", "db": "results/lnlens.sqlite", "batch_size": 32, "chunk_size": 64,
            "skip_invalid": false, "prepend_bos": true, "processing": Self.processing, "prompts": "prompts/topic.jsonl",
            "shard": "0/2", "min_gap": 0.5, "bootstrap": "crossed",
        ]
        #expect(o.json == RunOptions.json(before))
        #expect(DLAOptions(json: o.json) == o)
        // Text mode: the context used, a token limit or "all", the targets.
        var text = o
        (text.record.prompts, text.record.text, text.computation.context, text.computation.targets) = (nil, "corpus/heldout.txt", 128, "paper")
        for (limit, stored) in [(nil, "all" as Any), (20, 20 as Any)] {
            text.computation.maxTokens = TokenLimit(limit)
            var expected = before
            (expected["prompts"], expected["text"], expected["context"], expected["targets"]) = (nil, "corpus/heldout.txt", 128, "paper")
            expected["max_tokens"] = stored
            #expect(text.json == RunOptions.json(expected))
            #expect(DLAOptions(json: text.json) == text)
        }
        #expect(text.unit == "windows" && o.unit == "prompts")
    }

    @Test func patchEvalAndTrainOptionsStoreAsBefore() {
        var p = PatchOptions()
        (p.record.models, p.record.db, p.record.prompts, p.record.processing) = ("gpt2-tiny", "r.sqlite", "ioi", Self.processing)
        (p.computation.sites, p.computation.methods, p.computation.direction) = ("resid_pre,z", "activation,atp", "noise")
        (p.computation.prependBOS, p.computation.skipInvalid, p.computation.batchSize, p.computation.chunkSize) = (true, true, 16, 32)
        (p.computation.minGap, p.record.gridNormalize) = (1e-6, GridPoint(layer: 0, position: 11))
        #expect(p.json == RunOptions.json([
            "models": "gpt2-tiny", "db": "r.sqlite", "prompts": "ioi", "processing": Self.processing, "sites": "resid_pre,z",
            "methods": "activation,atp", "direction": "noise", "prepend_bos": true, "skip_invalid": true, "batch_size": 16,
            "chunk_size": 32, "min_gap": 1e-6, "grid_normalize": "0,11",
        ]))
        #expect(PatchOptions(json: p.json) == p)

        var e = EvalOptions()
        e.computation = .init(context: 128, batch: 8, chunkSize: 32)
        (e.record.models, e.record.lnModes, e.record.text, e.record.db, e.record.shard) = ("a,b", "layernorm,ln-free", "heldout", "e.sqlite", "1/4")
        #expect(e.json == RunOptions.json([
            "models": "a,b", "ln_modes": "layernorm,ln-free", "text": "heldout", "context": 128, "batch": 8, "chunk_size": 32,
            "db": "e.sqlite", "shard": "1/4",
        ]))
        #expect(e.merged(into: "m.sqlite").json == RunOptions.json([
            "models": "a,b", "ln_modes": "layernorm,ln-free", "text": "heldout", "context": 128, "batch": 8, "chunk_size": 32,
            "db": "m.sqlite",
        ]))

        var t = TrainOptions()
        (t.computation.corpus, t.computation.seqLen, t.computation.batchTokens, t.computation.microBatch) = ("corpus/train.txt", 128, 8192, 8)
        (t.computation.weightDecay, t.computation.maxGradNorm, t.computation.seed) = (0.01, 1.0, UInt64.max)
        (t.computation.dtype, t.computation.lr, t.computation.steps) = ("f16", 6e-4, 300)
        (t.record.out, t.record.checkpointEvery, t.record.db, t.record.initConfig, t.record.from) = ("out", 50, "t.sqlite", "c.json", "")
        let train: [String: Any] = [
            "corpus": "corpus/train.txt", "out": "out", "seq_len": 128, "batch_tokens": 8192, "micro_batch": 8, "weight_decay": 0.01,
            "max_grad_norm": 1.0, "seed": UInt64.max, "checkpoint_every": 50, "dtype": "f16", "db": "t.sqlite", "init": "c.json",
            "from": "", "lr": 6e-4, "steps": 300,
        ]
        #expect(t.json == RunOptions.json(train))
        #expect(TrainOptions(json: t.json) == t)
        var r = t
        (r.record.initConfig, r.record.from, r.record.model) = (nil, nil, "gpt2-tiny")
        (r.computation.keepLN, r.computation.auxWeight, r.computation.momentum, r.computation.schedule) = (true, 0.1, 0.9, "h.0.ln_2@20,ln_f@48")
        var removeLN = train
        (removeLN["init"], removeLN["from"], removeLN["model"], removeLN["keep_ln"]) = (nil, nil, "gpt2-tiny", true)
        (removeLN["aux_weight"], removeLN["momentum"], removeLN["schedule"]) = (0.1, 0.9, "h.0.ln_2@20,ln_f@48")
        #expect(r.json == RunOptions.json(removeLN))
        #expect(TrainOptions(json: r.json) == r)
    }

    /// Runs before schema v3 stored numbers and booleans as text: they read as the same values;
    /// what cannot be read is unset; a row that is not an object reads as no options.
    @Test func oldTextReadsAsTheValues() {
        let old = DLAOptions(json: #"{"prepend_bos": "true", "skip_invalid": "false", "batch_size": "32", "chunk_size": "64.0", "min_gap": "0.5", "max_tokens": "all", "context": "x"}"#)
        #expect(old.computation.prependBOS == true && old.computation.skipInvalid == false)
        #expect(old.computation.batchSize == 32 && old.computation.chunkSize == 64 && old.computation.minGap == 0.5)
        #expect(old.computation.maxTokens == .all && old.computation.context == nil)
        #expect(DLAOptions(json: "not json") == DLAOptions() && DLAOptions(json: "[1]") == DLAOptions())
        let train = TrainOptions(json: #"{"lr": "0.0006", "max_grad_norm": "1.0", "seed": "18446744073709551615", "keep_ln": "true"}"#)
        #expect(train.computation.lr == 6e-4 && train.computation.maxGradNorm == 1 && train.computation.seed == UInt64.max)
        #expect(train.computation.keepLN == true)
        #expect(PatchOptions(json: #"{"grid_normalize": [0, 11], "min_gap": -1}"#).record.gridNormalize == GridPoint(layer: 0, position: 11))
        #expect(PatchOptions(json: #"{"min_gap": -1}"#).minGap == TaskCheck.defaultMinGap)
        #expect(PatchOptions(json: #"{"min_gap": "nan"}"#).computation.minGap == nil)
    }

    /// One comparison for resume and merge: the computation's options, by value; the first that
    /// differs (by key) named with both values as text; the record's options never.
    @Test func sameComputationComparesTheComputationOnly() {
        var a = DLAOptions(), b = DLAOptions()
        (a.computation.batchSize, a.record.db) = (8, "a.sqlite")
        (b.computation.batchSize, b.record.db) = (8, "b.sqlite")
        #expect(DLAOptions.sameComputation(a, b) == nil)
        (b.computation.minGap, b.computation.batchSize) = (0.25, 16)
        #expect(DLAOptions.sameComputation(a, b) == OptionDifference(key: "batch_size", a: "8", b: "16"))
        b.computation.batchSize = 8
        #expect(DLAOptions.sameComputation(a, b) == OptionDifference(key: "min_gap", a: nil, b: "0.25"))
        #expect(DLAOptions.sameComputation(#"{"batch_size": "8"}"#, #"{"batch_size": 8.0}"#) == nil)
        #expect(EvalOptions.sameComputation(#"{"batch": 1, "db": "x"}"#, #"{"batch": 1, "shard": "0/2"}"#) == nil)
    }
}
