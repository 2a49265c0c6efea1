import Foundation
import ResultsStore

/// Runs written through the store API as the commands write them (the `patch`, `train` and
/// `eval` commands do not exist yet; these rows follow the schema they will write).
enum SyntheticRuns {
    static func record(_ command: String, model: String = "models/gpt2-tiny", lnMode: String = "layernorm",
                       promptSet: String = "prompts/ioi.jsonl", nPrompts: Int, options: String = "{}") -> RunRecord {
        RunRecord(command: command, optionsJSON: options, modelPath: model, modelHash: "hash-\(model)", lnMode: lnMode,
                  processingJSON: "{}", promptSetPath: promptSet, promptSetHash: "set-\(promptSet)", nPrompts: nPrompts,
                  toolVersion: "test")
    }

    /// A deterministic value in [-1, 1) from integers.
    static func wobble(_ values: Int...) -> Double { wobble(values) }

    static func wobble(_ values: [Int]) -> Double {
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
    /// The other IOI order of `tokens` (the subject first): the same length, another template.
    static let swapped = ["<|endoftext|>", "When", " John", " and", " Mary", " went", " to", " the", " store", ",", " John",
                          " gave", " a", " drink", " to"]

    /// A (prompt, site, layer, position) whose activation-patching effect `patch` sets to 0.
    struct PatchCell: Hashable {
        let prompt: Int, site: String, layer: Int, position: Int
    }

    /// A patch run: `sites` × layers × positions (and `headSites` × layers × heads) for activation
    /// patching and `estimators`, per prompt, every value times `scale` (0 at `zeroed`). With `templates: 2` the odd
    /// prompts have the subject first (`swapped`); without `sharedTemplate` prompt p has p tokens
    /// fewer. `options` is stored as the run's `options_json`.
    static func patch(_ db: ResultsDatabase, layers: Int = 3, prompts: Int = 4, sites: [String] = StoreName.positionSites,
                      headSites: [String] = [], heads: Int = 4,
                      estimators: [String] = [StoreName.atp, StoreName.atpStar], sharedTemplate: Bool = true, templates: Int = 1,
                      withErrors: Bool = true, extraRows: [ResultRow] = [], scale: Double = 1, options: String = "{}",
                      model: String = "models/gpt2-tiny", lnFree: Bool = false,
                      zeroed: Set<PatchCell> = []) throws -> Int64 {
        let id = try db.beginRun(record(StoreName.patchCommand, model: model, lnMode: lnFree ? "ln-free" : "layernorm",
                                        nPrompts: prompts, options: options))
        var rows: [ResultRow] = extraRows, promptRows: [PromptRow] = []
        func estimates(_ effect: Double, _ k: Int, _ salt: Int...) -> Double {
            let e = effect * (0.8 + 0.1 * Double(k)) + 0.02 * scale * wobble(salt + [k])
            return estimators[k] == StoreName.atpStar ? abs(e) : e
        }
        for p in 0..<prompts {
            let base = templates == 2 && p % 2 == 1 ? swapped : tokens
            let toks = sharedTemplate ? base : Array(base.prefix(base.count - p))
            promptRows.append(PromptRow(promptIndex: p, prompt: toks.joined(), answer: " Mary", wrong: " John",
                                        nTokens: toks.count, corrupt: "corrupt \(p)", tokens: toks))
            for site in sites {
                for l in 0..<layers {
                    for pos in 0..<toks.count {
                        let zero = zeroed.contains(PatchCell(prompt: p, site: site, layer: l, position: pos))
                        let effect = zero ? 0 : scale * (pos == 2 || pos == toks.count - 1 ? 1.0 : 0.1) * wobble(p, l, pos, site.count)
                        rows.append(ResultRow(promptIndex: p, site: site, layer: l, position: pos, quantity: StoreName.activation,
                                              value: effect))
                        for (k, e) in estimators.enumerated() {
                            rows.append(ResultRow(promptIndex: p, site: site, layer: l, position: pos, quantity: e,
                                                  value: estimates(effect, k, pos, l, p)))
                        }
                    }
                }
            }
            for site in headSites {
                for l in 0..<layers {
                    for h in 0..<heads {
                        let effect = scale * 0.5 * wobble(p, l, h, site.count, 7)
                        rows.append(ResultRow(promptIndex: p, site: site, layer: l, head: h, quantity: StoreName.activation, value: effect))
                        for (k, e) in estimators.enumerated() {
                            rows.append(ResultRow(promptIndex: p, site: site, layer: l, head: h, quantity: e,
                                                  value: estimates(effect, k, h, l, p, 7)))
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
        let id = try db.beginRun(record(StoreName.evalCommand, model: key, lnMode: "ln-free",
                                        promptSet: "corpus/heldout.txt", nPrompts: 100))
        try db.finishRun(runID: id, status: .completed, summaries: [
            SummaryRow(scope: StoreName.scopeEval, key: key, metric: StoreName.loss, value: 3.0797),
            SummaryRow(scope: StoreName.scopeEval, key: key, metric: StoreName.ciLow, value: 3.05),
            SummaryRow(scope: StoreName.scopeEval, key: key, metric: StoreName.ciHigh, value: 3.11),
            SummaryRow(scope: StoreName.scopeEval, key: key, metric: "tokens", value: 51200),
        ], error: nil)
        return id
    }

    /// An eval run of several models as `lnlens eval` stores it: `model_path` the models as given
    /// joined by ` | `, `ln_mode` the first one's, `ln_modes` in the options when `recordModes`.
    static func evalOfModels(_ db: ResultsDatabase, _ models: [(name: String, lnMode: String, loss: Double)],
                             recordModes: Bool = true) throws -> Int64 {
        let options = recordModes ? #"{"ln_modes": "\#(models.map(\.lnMode).joined(separator: ","))"}"# : "{}"
        let id = try db.beginRun(record(StoreName.evalCommand, model: models.map(\.name).joined(separator: " | "),
                                        lnMode: models[0].lnMode, promptSet: "corpus/heldout.txt", nPrompts: 100, options: options))
        try db.finishRun(runID: id, status: .completed, summaries: models.flatMap { m in [
            SummaryRow(scope: StoreName.scopeEval, key: m.name, metric: StoreName.loss, value: m.loss),
            SummaryRow(scope: StoreName.scopeEval, key: m.name, metric: StoreName.ciLow, value: m.loss - 0.03),
            SummaryRow(scope: StoreName.scopeEval, key: m.name, metric: StoreName.ciHigh, value: m.loss + 0.03),
            SummaryRow(scope: StoreName.scopeEval, key: m.name, metric: "windows", value: 100),
        ] }, error: nil)
        return id
    }
}
