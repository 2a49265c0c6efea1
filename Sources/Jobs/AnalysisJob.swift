import Analysis
import Foundation
import GPT2
import ResultsStore
import Support
import Training

/// One sequence an analysis reads: a window of a text, or a prompt of a prompt set (whose answer
/// the logit lens scores).
public struct AnalysisUnit: Sendable {
    /// The unit's index in the whole input (`results.prompt_index`).
    public var index: Int
    public var tokens: [Int]
    /// Prompt sets: the answer token, scored at the last position.
    public var answerID: Int?
    /// Prompt sets: the prompt as stored in `run_prompts`.
    public var prompt: PromptRow?
}

/// What an analysis reads, in one place so that another reader (a token file, a dataset) joins
/// here: non-overlapping windows of `context` tokens of a token stream, exactly as `eval` cuts
/// them (the tail that fills no window dropped), or the prompts of a prompt set.
public enum AnalysisInput: Sendable {
    case windows(TokenCorpus, context: Int)
    case prompts(PromptSet)

    public var path: String {
        switch self {
        case .windows(let c, _): c.path
        case .prompts(let p): p.path
        }
    }

    /// XXH64 of the tokens (windows), SHA-256 of the file (prompts).
    public var hash: String {
        switch self {
        case .windows(let c, _): c.hash
        case .prompts(let p): p.contentHash
        }
    }

    /// Units: windows or prompts.
    public var count: Int {
        switch self {
        case let .windows(c, context): c.blockCount(seqLen: context)
        case .prompts(let p): p.examples.count
        }
    }

    /// What a unit is called in messages and progress.
    public var unitName: String {
        if case .windows = self { return "windows" }
        return "prompts"
    }

    /// Unit `i`.
    public func unit(_ i: Int) -> AnalysisUnit {
        switch self {
        case let .windows(c, context):
            return AnalysisUnit(index: i, tokens: c.block(i, seqLen: context))
        case .prompts(let p):
            let e = p.examples[i]
            return AnalysisUnit(index: i, tokens: e.tokens, answerID: e.answerID,
                                prompt: PromptRow(promptIndex: i, prompt: e.prompt, answer: e.answer, wrong: e.wrong,
                                                  nTokens: e.tokens.count))
        }
    }
}

/// An analysis that reads each unit with one forward pass and stores rows per unit: attention
/// sinks, residual norms, the logit lens. Its summaries are computed from the stored rows alone, so
/// that a run, a resumed run and the merge of its shards store the same ones.
public protocol SequenceAnalysis: Sendable {
    /// `runs.command`.
    static var command: String { get }
    /// The analysis an invocation's options describe (`merge` rebuilds it from a stored run's).
    init(options: AnalysisOptions)
    /// The rows of a batch of units of equal length.
    func rows(model: GPT2Model, batch: [AnalysisUnit]) throws -> [ResultRow]
    /// Bytes the pass caches for one sequence of T tokens (batches are sized by it).
    func cacheBytes(T: Int, config: GPT2Config) -> Int
    /// The run's summaries from all its stored rows, in any order.
    static func summaries(from rows: [ResultRow]) -> [SummaryRow]
}

/// The options of a `sinks`, `norms` or `lens` run.
public struct AnalysisOptions: ShardOptions {
    public struct Computation: Codable, Equatable, Sendable {
        /// Text windows: their length.
        @Stored public var context: Int?
        /// Prompt sets: `<|endoftext|>` first.
        @Stored public var prependBOS: Bool?
        @Stored public var skipInvalid: Bool?
        /// Sequences per forward pass (moves values in the last float digits).
        @Stored public var batch: Int?
        @Stored public var chunkSize: Int?
        /// `sinks`: the attention threshold.
        @Stored public var eps: Double?
        /// `lens`: read `resid_mid` too.
        @Stored public var inclMid: Bool?
        /// `lens` on windows: `last` scores only each window's last next token (nil: every position).
        @Stored public var positions: String?
        public init() {}
        enum CodingKeys: String, CodingKey {
            case context, prependBOS = "prepend_bos", skipInvalid = "skip_invalid", batch, chunkSize = "chunk_size", eps
            case inclMid = "incl_mid", positions
        }
    }

    public struct Record: Codable, Equatable, Sendable, ShardRecord {
        /// Every model of the invocation, comma-separated.
        @Stored public var models: String?
        @Stored public var db: String?
        @Stored public var text: String?
        @Stored public var prompts: String?
        @Stored public var shard: String?
        @Stored public var processing: [String: Bool]?
        public init() {}
    }

    public var computation = Computation()
    public var record = Record()
    public init() {}
}

/// Runs one `SequenceAnalysis` of one model over an input and stores it as one run: rows per unit
/// in chunks (each chunk, with its progress marker, in one transaction), units of equal length
/// batched. Ctrl-C (`JobStop` from `progress`) stops after the chunk being stored and marks the run
/// interrupted; `resume` continues it to the rows of an uninterrupted run; with a `shard` the run
/// takes the units whose index ≡ I (mod N), under their indices in the whole input, and
/// `MergeJob` combines the shards.
public struct AnalysisJob<A: SequenceAnalysis> {
    public var analysis: A
    public var model: GPT2Model
    public var modelPath: String
    public var modelHash: String
    public var input: AnalysisInput
    public var options: AnalysisOptions
    public var toolVersion: String
    public var shard: Shard?
    public var forceResume = false
    /// Bytes one batch may cache (`batch` is lowered to stay within it).
    public var memoryBudget = 1 << 30

    public init(analysis: A, model: GPT2Model, modelPath: String, modelHash: String, input: AnalysisInput,
                options: AnalysisOptions, toolVersion: String) {
        self.analysis = analysis
        self.model = model
        self.modelPath = modelPath
        self.modelHash = modelHash
        self.input = input
        self.options = options
        self.toolVersion = toolVersion
    }

    var batch: Int { options.computation.batch ?? 8 }
    var chunkSize: Int { options.computation.chunkSize ?? 32 }

    /// The units this run covers (its shard's).
    var selected: [Int] {
        let all = Array(0..<input.count)
        return shard.map { $0.select(all) } ?? all
    }

    /// Stores the run (or continues `resume`) and returns its id once it is complete.
    /// `progress(done, total)` counts units after each stored chunk.
    @discardableResult
    public func run(db: ResultsDatabase, resume: Int64? = nil, progress: (Int, Int) throws -> Void = { _, _ in }) throws -> Int64 {
        let units = selected
        if let shard, units.isEmpty {
            throw ShardError.invalid(source: "--shard", value: shard.description,
                                     reason: "the input has only \(input.count) \(input.unitName): use at most \(input.count) shards")
        }
        let (id, done, completed) = try RunLifecycle.beginOrResume(db: db, run: RunRecord(
            command: A.command, optionsJSON: options.json, modelPath: modelPath, modelHash: modelHash,
            lnMode: model.lnMode.rawValue, processingJSON: model.processing.json, promptSetPath: input.path,
            promptSetHash: input.hash, nPrompts: input.count, toolVersion: toolVersion,
            shard: shard.map { ($0.index, $0.count) }), options: AnalysisOptions.self, resume: resume, forceResume: forceResume)
        if completed { return id }
        try RunLifecycle.execute(db: db, runID: id, total: units.count, unit: input.unitName, resume: "--resume \(id)",
                                 doneCount: { units.filter(((try? db.completedPromptIndices(runID: id)) ?? done).contains).count }, {
            var finished = units.filter(done.contains).count
            try progress(finished, units.count)
            for start in stride(from: 0, to: units.count, by: chunkSize) {
                let chunk = units[start..<min(units.count, start + chunkSize)].filter { !done.contains($0) }
                if chunk.isEmpty { continue }
                let (values, prompts) = try rows(chunk.map(input.unit))
                try db.writeBatch(runID: id, prompts: prompts, values: values, ranges: contiguousRanges(chunk))
                finished += chunk.count
                try progress(finished, units.count)
            }
        }, finish: { (A.summaries(from: try db.results(runID: id)), []) })
        return id
    }

    /// Every row of `units` (and their prompts): equal lengths batched, at most `effectiveBatch`
    /// at a time; one `input`/`tokens` row per unit, its length.
    func rows(_ units: [AnalysisUnit]) throws -> ([ResultRow], [PromptRow]) {
        var values: [ResultRow] = []
        let byLength = Dictionary(grouping: units, by: \.tokens.count)
        for length in byLength.keys.sorted() {
            let group = byLength[length]!
            let size = effectiveBatch(T: length)
            for start in stride(from: 0, to: group.count, by: size) {
                values += try analysis.rows(model: model, batch: Array(group[start..<min(group.count, start + size)]))
            }
        }
        values += units.map { ResultRow(promptIndex: $0.index, site: StoreName.inputSite, quantity: StoreName.tokens,
                                        value: Double($0.tokens.count)) }
        return (values.filter { $0.value.isFinite }, units.compactMap(\.prompt))
    }

    /// `batch`, lowered so that one pass (its arena and what it caches) stays within `memoryBudget`.
    public func effectiveBatch(T: Int) -> Int {
        let perSequence = ForwardPass.footprint(B: 1, T: T, config: model.config, logits: .none, backward: false)
            + analysis.cacheBytes(T: T, config: model.config)
        return max(1, min(batch, memoryBudget / max(1, perSequence)))
    }
}
