import Foundation
import GPT2
import ResultsStore

/// What a `dla` run attributes: the last position of each prompt of a prompt set, or positions
/// of a plain text.
public enum AttributionInput: Sendable {
    case prompts(PromptSet)
    case text(TextPrompts, TextTargets = .nextToken)

    public var path: String {
        switch self {
        case .prompts(let p): p.path
        case .text(let t, _): t.path
        }
    }

    public var contentHash: String {
        switch self {
        case .prompts(let p): p.contentHash
        case .text(let t, _): t.contentHash
        }
    }

    /// Forward sequences, each with the targets it carries, in prompt-index order.
    public var units: [AttributionUnit] {
        switch self {
        case .prompts(let set):
            return set.examples.map { ex in
                AttributionUnit(tokens: ex.tokens, targets: [
                    .init(prompt: ex.index, position: ex.tokens.count - 1, answerID: ex.answerID, wrongID: ex.wrongID,
                          text: ex.prompt, answer: ex.answer, wrong: ex.wrong),
                ])
            }
        case .text(let text, .lastTokenOfWindow):
            return text.windows.enumerated().map { i, w in
                let last = w.tokens.count - 1
                return AttributionUnit(tokens: w.tokens, targets: [
                    .init(prompt: i, position: last, answerID: w.tokens[last], wrongID: nil, text: nil, answer: nil,
                          wrong: nil),
                ])
            }
        case .text(let text, .nextToken):
            var next = 0
            return text.windows.map { w in
                let targets = (0..<(w.tokens.count - 1)).map { p in
                    defer { next += 1 }
                    return AttributionUnit.Target(prompt: next, position: p, answerID: w.tokens[p + 1], wrongID: nil,
                                                  text: nil, answer: nil, wrong: nil)
                }
                return AttributionUnit(tokens: w.tokens, targets: targets)
            }
        }
    }

    public var count: Int {
        switch self {
        case .prompts(let p): p.examples.count
        case .text(let t, .nextToken): t.predictedPositions
        case .text(let t, .lastTokenOfWindow): t.windows.count
        }
    }
}

/// Which positions of a text are attributed, and to which token.
public enum TextTargets: String, Sendable {
    /// Every position, to the actual next token (next-token prediction on the text).
    case nextToken = "next-token"
    /// Only the last position of each window, to the token at that position: what the paper's
    /// `attention_head_attribution/run_analysis.py` does (`target_tokens = batch[:, -1]`), for
    /// reproducing its figures exactly.
    case lastTokenOfWindow = "paper"
}

/// One forward sequence and the positions of it that are attributed.
public struct AttributionUnit: Sendable {
    public struct Target: Sendable {
        public var prompt: Int, position: Int, answerID: Int, wrongID: Int?
        public var text: String?, answer: String?, wrong: String?
    }
    public var tokens: [Int]
    public var targets: [Target]
}

/// Runs DLA against the exact direct effect over an input, storing every number as it goes.
///
/// Work is stored in chunks of consecutive prompt indices, each chunk in one transaction with
/// its progress marker; inside a chunk, equal-length sequences run as one batch. A run that was
/// interrupted (even by kill -9) is continued with `resume:` and ends with exactly the rows an
/// uninterrupted run stores, because chunk rows are upserts and summaries are computed from the
/// stored rows at the end.
public struct DLARunner {
    public var model: GPT2Model
    public var modelPath: String
    public var modelHash: String
    public var input: AttributionInput
    /// Decodes token ids for the stored prompt text in text mode.
    public var decode: @Sendable ([Int]) -> String
    public var optionsJSON: String
    public var toolVersion: String
    public var batchSize = 32
    public var chunkSize = 64
    /// Bytes one forward batch may keep in activations (see `effectiveBatchSize`).
    public var memoryBudget = 2 << 30

    public init(model: GPT2Model, modelPath: String, modelHash: String, input: AttributionInput,
                decode: @escaping @Sendable ([Int]) -> String, optionsJSON: String, toolVersion: String) {
        self.model = model
        self.modelPath = modelPath
        self.modelHash = modelHash
        self.input = input
        self.decode = decode
        self.optionsJSON = optionsJSON
        self.toolVersion = toolVersion
    }

    /// Thrown by a `progress` callback to stop the run after the chunk just stored; the run is
    /// marked `interrupted` and `run` throws `AnalysisError.interrupted` naming it.
    public struct Stop: Error {
        public init() {}
    }

    /// Options (keys of `optionsJSON`) that change the stored numbers: a run resumes only with
    /// the same values. Batch and chunk sizes are among them because they decide which prompts
    /// share a matrix product, which moves results in the last float digits.
    public static let resultOptionKeys = ["prepend_bos", "skip_invalid", "context", "max_tokens", "targets",
                                          "batch_size", "chunk_size"]

    static func resultOptions(_ json: String) -> [String: String] {
        let object = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any] ?? [:]
        var out: [String: String] = [:]
        for key in resultOptionKeys { if let v = object[key] { out[key] = "\(v)" } }
        return out
    }

    public static let quantityCheck = "components_sum_error"
    public static let checkComponent = "resid_post"

    var processingJSON: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys  // stable text: resume compares it
        let data = (try? encoder.encode(model.processing)) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    /// Starts a new run (or continues `resume`) and returns its id once it is complete.
    /// `progress(done, total)` is called after each stored chunk; if it throws `Stop`, the run stops
    /// there, marked interrupted (any other error: failed); either can be resumed.
    @discardableResult
    public func run(db: ResultsDatabase, resume: Int64? = nil,
                    progress: (Int, Int) throws -> Void = { _, _ in }) throws -> Int64 {
        let total = input.count
        let runID: Int64
        var done = Set<Int>()
        if let resume {
            guard let record = try db.run(id: resume) else { throw AnalysisError.resumeMismatch(runID: resume, reason: "there is no such run in \(db.path)") }
            func mismatch(_ what: String, _ stored: String, _ now: String) -> AnalysisError {
                .resumeMismatch(runID: resume, reason: "its \(what) is \(stored) but this invocation has \(now)")
            }
            guard record.command == StoreName.dlaCommand else { throw mismatch("command", record.command, StoreName.dlaCommand) }
            guard record.modelHash == modelHash else { throw mismatch("model weights hash", record.modelHash, modelHash) }
            guard record.promptSetHash == input.contentHash else {
                throw mismatch("prompt set hash", String(record.promptSetHash.prefix(12)), String(input.contentHash.prefix(12)))
            }
            guard record.nPrompts == total else { throw mismatch("prompt count", "\(record.nPrompts)", "\(total)") }
            guard record.processingJSON == processingJSON else { throw mismatch("processing", record.processingJSON, processingJSON) }
            let stored = Self.resultOptions(record.optionsJSON), now = Self.resultOptions(optionsJSON)
            guard stored == now else {
                let key = Set(stored.keys).union(now.keys).sorted().first { stored[$0] != now[$0] }!
                throw mismatch("option \(key)", stored[key] ?? "unset", now[key] ?? "unset")
            }
            if record.status == .completed { return resume }
            try db.markResumed(runID: resume)
            runID = resume
            done = try db.completedPromptIndices(runID: resume)
        } else {
            runID = try db.beginRun(NewRun(
                command: StoreName.dlaCommand, optionsJSON: optionsJSON, modelPath: modelPath, modelHash: modelHash,
                lnMode: model.lnMode.rawValue, processingJSON: processingJSON, promptSetPath: input.path,
                promptSetHash: input.contentHash, nPrompts: total, toolVersion: toolVersion))
        }
        do {
            try runChunks(db: db, runID: runID, done: done, total: total, progress: progress)
            try db.finishRun(runID: runID, status: .completed, summaries: try summaries(db: db, runID: runID), error: nil)
        } catch is Stop {
            let done = (try? db.completedPromptIndices(runID: runID).count) ?? 0
            try? db.finishRun(runID: runID, status: .interrupted, summaries: [], error: "interrupted by the user")
            throw AnalysisError.interrupted(runID: runID, done: done, total: total)
        } catch {
            try? db.finishRun(runID: runID, status: .failed, summaries: [], error: error.localizedDescription)
            throw error
        }
        return runID
    }

    private func runChunks(db: ResultsDatabase, runID: Int64, done: Set<Int>, total: Int,
                           progress: (Int, Int) throws -> Void) throws {
        // Chunks of consecutive units holding about `chunkSize` targets.
        var chunks: [[AttributionUnit]] = [[]]
        var inChunk = 0
        for unit in input.units {
            if inChunk >= chunkSize { chunks.append([]); inChunk = 0 }
            chunks[chunks.count - 1].append(unit)
            inChunk += unit.targets.count
        }
        var finished = done.count
        try progress(finished, total)
        for chunk in chunks where !chunk.isEmpty {
            let indices = chunk.flatMap { $0.targets.map(\.prompt) }
            if indices.allSatisfy(done.contains) { continue }
            var values: [ResultRow] = []
            var prompts: [PromptRow] = []
            let byLength = Dictionary(grouping: chunk, by: { $0.tokens.count })
            for length in byLength.keys.sorted() {
                let group = byLength[length]!
                let size = effectiveBatchSize(length: length)
                for start in stride(from: 0, to: group.count, by: size) {
                    let batch = Array(group[start..<min(start + size, group.count)])
                    var targets: [AttributionTarget] = []
                    for (row, unit) in batch.enumerated() {
                        for t in unit.targets {
                            targets.append(AttributionTarget(prompt: t.prompt, row: row, position: t.position,
                                                             answerID: t.answerID, wrongID: t.wrongID))
                            prompts.append(PromptRow(
                                promptIndex: t.prompt,
                                prompt: t.text ?? decode(Array(unit.tokens[max(0, t.position - 31)...t.position])),
                                answer: t.answer ?? decode([t.answerID]), wrong: t.wrong, nTokens: t.position + 1))
                        }
                    }
                    let out = try DirectLogitAttribution.attribute(model: model, tokens: batch.map(\.tokens),
                                                                   targets: targets)
                    for r in out.rows {
                        values.append(ResultRow(promptIndex: r.prompt, component: r.component,
                                                quantity: StoreName.dla, value: r.dla))
                        values.append(ResultRow(promptIndex: r.prompt, component: r.component,
                                                quantity: StoreName.directEffect, value: r.directEffect))
                    }
                    for err in out.perTargetSumError {
                        values.append(ResultRow(promptIndex: err.prompt, component: Self.checkComponent,
                                                quantity: Self.quantityCheck, value: err.error))
                    }
                }
            }
            try db.writeBatch(runID: runID, prompts: prompts, values: values,
                              firstPrompt: indices.min()!, lastPrompt: indices.max()!)
            finished += indices.filter { !done.contains($0) }.count
            try progress(finished, total)
        }
    }

    /// `batchSize`, lowered so that one batch's retained activations stay within `memoryBudget`
    /// bytes: attention patterns grow with T², so long text windows run fewer at a time.
    public func effectiveBatchSize(length T: Int) -> Int {
        let cfg = model.config
        let perLayer = 2 * cfg.nHeads * T * T + 14 * T * cfg.dModel + 2 * T * cfg.dMLP  // floats
        let perSequence = 4 * cfg.nLayers * perLayer
        return max(1, min(batchSize, memoryBudget / max(1, perSequence)))
    }

    /// NMAE over heads (global, per head, per layer) and the decomposition check, from the stored rows.
    func summaries(db: ResultsDatabase, runID: Int64) throws -> [SummaryRow] {
        let stored = try db.results(runID: runID)
        let rows = Self.attributions(from: stored)
        let nmae = NMAESummary(rows: rows)
        var out = [SummaryRow(scope: StoreName.scopeHeads, key: "all", metric: StoreName.nmae, value: nmae.headsGlobal)]
        out += nmae.perHead.sorted { $0.key < $1.key }.map {
            SummaryRow(scope: StoreName.scopeHead, key: $0.key, metric: StoreName.nmae, value: $0.value)
        }
        out += nmae.perLayer.sorted { $0.key < $1.key }.map {
            SummaryRow(scope: StoreName.scopeLayer, key: $0.key, metric: StoreName.nmae, value: $0.value)
        }
        let check = stored.filter { $0.quantity == Self.quantityCheck }.map(\.value).max() ?? 0
        out.append(SummaryRow(scope: StoreName.scopeCheck, key: "components_sum", metric: "max_abs_error", value: check))
        return out
    }

    /// Pairs stored `dla` and `direct_effect` rows back into attributions, in (prompt, component) order.
    public static func attributions(from stored: [ResultRow]) -> [ComponentAttribution] {
        var dla: [String: Double] = [:], de: [String: Double] = [:]
        var keys: [(Int, String)] = []
        for r in stored {
            let key = "\(r.promptIndex)|\(r.component)"
            if r.quantity == StoreName.dla {
                dla[key] = r.value
                keys.append((r.promptIndex, r.component))
            } else if r.quantity == StoreName.directEffect {
                de[key] = r.value
            }
        }
        return keys.compactMap { p, c in
            let key = "\(p)|\(c)"
            guard let a = dla[key], let e = de[key] else { return nil }
            return ComponentAttribution(prompt: p, component: c, dla: a, directEffect: e)
        }
    }
}
