import Foundation
import ResultsStore

/// Runs written through the store API as the commands write them (the `patch`, `train` and
/// `eval` commands do not exist yet; these rows follow the schema they will write).
enum SyntheticRuns {
    static func record(_ command: String, model: String = "models/gpt2-tiny", lnMode: String = "layernorm",
                       promptSet: String = "prompts/ioi.jsonl", nPrompts: Int) -> RunRecord {
        RunRecord(command: command, optionsJSON: "{}", modelPath: model, modelHash: "hash-\(model)", lnMode: lnMode,
                  processingJSON: "{}", promptSetPath: promptSet, promptSetHash: "set-\(promptSet)", nPrompts: nPrompts,
                  toolVersion: "test")
    }

    /// A deterministic value in [-1, 1) from integers.
    static func wobble(_ values: Int...) -> Double {
        var h: UInt64 = 0x9E37_79B9_7F4A_7C15
        for v in values { h = (h ^ UInt64(bitPattern: Int64(v))) &* 0xBF58_476D_1CE4_E5B9; h ^= h >> 31 }
        return Double(h % 2000) / 1000 - 1
    }

    /// A dla run over `layers` × `heads` heads: DE varies by prompt and head; DLA is DE scaled by
    /// a head-dependent factor (0 error when `lnFree`). `summaries` are stored as given.
    static func dla(_ db: ResultsDatabase, layers: Int = 3, heads: Int = 4, prompts: Int = 12, lnFree: Bool = false,
                    model: String = "models/gpt2-tiny", status: RunStatus = .completed,
                    summaries: [SummaryRow] = []) throws -> Int64 {
        let id = try db.beginRun(record(StoreName.dlaCommand, model: model, lnMode: lnFree ? "ln-free" : "layernorm",
                                        nPrompts: prompts))
        var rows: [ResultRow] = [], promptRows: [PromptRow] = []
        for p in 0..<prompts {
            promptRows.append(PromptRow(promptIndex: p, prompt: "prompt \(p)", answer: " A", wrong: " B", nTokens: 5))
            for l in 0..<layers {
                for h in 0..<heads {
                    let de = wobble(p, l, h) * Double(l + 1)
                    let dla = lnFree ? de : de * (1 + 0.1 * Double(h + l)) + 0.05 * wobble(h, p, l)
                    rows.append(ResultRow(promptIndex: p, site: "result", layer: l, head: h, quantity: StoreName.dla, value: dla))
                    rows.append(ResultRow(promptIndex: p, site: "result", layer: l, head: h, quantity: StoreName.directEffect, value: de))
                }
            }
        }
        try db.writeBatch(runID: id, prompts: promptRows, values: rows, firstPrompt: 0, lastPrompt: prompts - 1)
        try db.finishRun(runID: id, status: status, summaries: summaries, error: status == .completed ? nil : "stopped")
        return id
    }

    static let tokens = ["<|endoftext|>", "When", " Mary", " and", " John", " went", " to", " the", " store", ",", " John",
                         " gave", " a", " drink", " to"]

    /// A patch run: `sites` × layers × positions for activation patching and `estimators`, per
    /// prompt; the prompts share a template (same tokens count) unless `sharedTemplate` is false.
    static func patch(_ db: ResultsDatabase, layers: Int = 3, prompts: Int = 4, sites: [String] = StoreName.positionSites,
                      estimators: [String] = [StoreName.atp, StoreName.atpStar], sharedTemplate: Bool = true,
                      withErrors: Bool = true, extraRows: [ResultRow] = []) throws -> Int64 {
        let id = try db.beginRun(record(StoreName.patchCommand, nPrompts: prompts))
        var rows: [ResultRow] = extraRows, promptRows: [PromptRow] = []
        for p in 0..<prompts {
            let toks = sharedTemplate ? tokens : Array(tokens.prefix(tokens.count - p))
            promptRows.append(PromptRow(promptIndex: p, prompt: toks.joined(), answer: " Mary", wrong: " John",
                                        nTokens: toks.count, corrupt: "corrupt \(p)", tokens: toks))
            for site in sites {
                for l in 0..<layers {
                    for pos in 0..<toks.count {
                        let effect = (pos == 2 || pos == toks.count - 1 ? 1.0 : 0.1) * wobble(p, l, pos, site.count)
                        rows.append(ResultRow(promptIndex: p, site: site, layer: l, position: pos, quantity: StoreName.activation,
                                              value: effect))
                        for (k, e) in estimators.enumerated() {
                            rows.append(ResultRow(promptIndex: p, site: site, layer: l, position: pos, quantity: e,
                                                  value: effect * (0.8 + 0.1 * Double(k)) + 0.02 * wobble(pos, l, p, k)))
                        }
                    }
                }
            }
        }
        try db.writeBatch(runID: id, prompts: promptRows, values: rows, firstPrompt: 0, lastPrompt: prompts - 1)
        var errors: [ErrorRow] = []
        if withErrors {
            for site in sites {
                for e in estimators {
                    for layer in [nil] + (0..<layers).map(Optional.some) {
                        for normalized in [false, true] {
                            for (m, v) in [("nmae", 23.5), ("pearson", 0.91), ("spearman", 0.88), ("sign_agreement", 0.97),
                                           ("topk_recall_10", 0.8), ("topk_recall_5pct", 0.75), ("n", 60)] {
                                errors.append(ErrorRow(site: site, method: e, layer: layer, normalized: normalized, metric: m,
                                                       value: v))
                            }
                        }
                    }
                }
            }
        }
        try db.finishRun(runID: id, status: .completed, summaries: [], errors: errors, error: nil)
        return id
    }

    /// A remove-ln run of `steps` steps with an event every 10 steps from step 10 (`ln_2 of
    /// block i removed`, then `ln_1 of block i removed`).
    static func training(_ db: ResultsDatabase, command: String = StoreName.removeLNCommand, steps: Int = 60,
                         events: Bool = true) throws -> Int64 {
        let id = try db.beginRun(record(command, promptSet: "corpus/train.txt", nPrompts: steps))
        let rows = (0..<steps).map { s in
            let event: String? = events && s > 0 && s % 10 == 0 ? (s <= 30 ? "ln_2 of block \(s / 10 - 1) removed"
                                                                           : "ln_1 of block \(s / 10 - 4) removed") : nil
            return TrainStepRow(step: s, loss: 3.4 - 0.3 * (1 - exp(-Double(s) / 20)) + 0.02 * wobble(s), lr: 6e-4,
                                tokens: (s + 1) * 1024, event: event)
        }
        try db.writeTrainSteps(runID: id, steps: rows)
        try db.finishRun(runID: id, status: .completed, summaries: [], error: nil)
        return id
    }

    /// An eval run with `eval` summaries for one model.
    static func eval(_ db: ResultsDatabase, key: String = "gpt2-tiny-lnfree") throws -> Int64 {
        let id = try db.beginRun(record(StoreName.evalCommand, model: "models/\(key)", lnMode: "ln-free",
                                        promptSet: "corpus/heldout.txt", nPrompts: 100))
        try db.finishRun(runID: id, status: .completed, summaries: [
            SummaryRow(scope: StoreName.scopeEval, key: key, metric: StoreName.loss, value: 3.0797),
            SummaryRow(scope: StoreName.scopeEval, key: key, metric: StoreName.ciLow, value: 3.05),
            SummaryRow(scope: StoreName.scopeEval, key: key, metric: StoreName.ciHigh, value: 3.11),
            SummaryRow(scope: StoreName.scopeEval, key: key, metric: "tokens", value: 51200),
        ], error: nil)
        return id
    }
}
