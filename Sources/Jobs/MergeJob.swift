import Foundation
import ResultsStore
import Support

/// Why shard databases were not merged: one line naming the shard file (and run) at fault.
public enum MergeError: LocalizedError, Equatable, Sendable {
    case noShards
    case givenTwice(path: String)
    case outputIsShard(path: String)
    case noShardedRun(path: String)
    case unknownRun(id: Int64)
    case notMergeable(path: String, runID: Int64, command: String)
    case doesNotBelong(path: String, runID: Int64, field: String, value: String, otherPath: String, otherRunID: Int64,
                       otherValue: String)
    case ambiguous(path: String, runIDs: [Int64], shard: String)
    case duplicateShard(shard: String, path: String, runID: Int64, otherPath: String, otherRunID: Int64)
    case missingShards(missing: [String], what: String, given: Int)
    case notCompleted(path: String, runID: Int64, shard: String, status: String)
    case changed(path: String, runID: Int64)
    case overlapping(unit: String, index: Int, path: String, runID: Int64, otherPath: String, otherRunID: Int64)
    case incomplete(what: String, unit: String, stored: Int, expected: Int, firstMissing: Int)
    case damaged(path: String, problem: String)

    public var errorDescription: String? {
        let text: String
        switch self {
        case .noShards:
            text = "give the shard databases after the output: lnlens merge OUT.sqlite SHARD.sqlite…"
        case let .givenTwice(path):
            text = "\(path) is given twice: give each shard database once"
        case let .outputIsShard(path):
            text = "\(path) is both the output and a shard database: merge into another file (e.g. merged.sqlite)"
        case let .noShardedRun(path):
            text = "\(path) holds no sharded run (a run of `lnlens dla`, `patch`, `edges`, `eval`, `sinks`, `norms`, `lens` or `neurons` with --shard I/N); list its runs with `lnlens runs --db \(path)`"
        case let .unknownRun(id):
            text = "--run \(id): none of the shard databases holds a sharded run with this id; list their runs with `lnlens runs --db FILE`"
        case let .notMergeable(path, id, command):
            text = "\(path) run \(id) is a \(command) run: merge combines the shards of dla, patch, edges, eval, sinks, norms, lens and neurons runs"
        case let .doesNotBelong(path, id, field, value, otherPath, otherID, otherValue):
            text = "\(path) run \(id) is not a shard of the same run as \(otherPath) run \(otherID): its \(field) is \(value) but that one's is \(otherValue); merge only the shards of one run"
        case let .ambiguous(path, ids, shard):
            text = "\(path) holds shard \(shard) of the same run completed \(ids.count) times (runs \(ids.map(String.init).joined(separator: ", "))): choose one with --run ID"
        case let .duplicateShard(shard, path, id, otherPath, otherID):
            text = "shard \(shard) is given twice, in \(otherPath) run \(otherID) and in \(path) run \(id): give each shard once"
        case let .missingShards(missing, what, given):
            let list = missing.prefix(5).joined(separator: ", ") + (missing.count > 5 ? " and \(missing.count - 5) more" : "")
            text = "shard\(missing.count == 1 ? "" : "s") \(list) of \(what) \(missing.count == 1 ? "is" : "are") missing (\(given) of \(given + missing.count) given): add \(missing.count == 1 ? "its database" : "their databases") to the command"
        case let .notCompleted(path, id, shard, status):
            text = "\(path) run \(id) (shard \(shard)) is \(status), not completed: finish it by repeating its command with --resume \(id) --db \(path), then merge again"
        case let .changed(path, id):
            text = "\(path) run \(id) was written to while merging: merge again once nothing writes to it"
        case let .overlapping(unit, index, path, id, otherPath, otherID):
            text = "\(path) run \(id) and \(otherPath) run \(otherID) both hold \(unit) \(index): they are not disjoint shards of one run"
        case let .damaged(path, problem):
            text = "\(path) is damaged (\(problem)); nothing was merged. Redo that shard (its command with --shard and a new --db), or recover what is readable with `sqlite3 \(path) .recover | sqlite3 recovered.sqlite` and merge recovered.sqlite"
        case let .incomplete(what, unit, stored, expected, first):
            text = "the shards of \(what) hold \(stored) of its \(expected) \(unit)s (\(unit) \(first) is in none): a shard database is incomplete; check them with `lnlens runs --db FILE`"
        }
        return text.oneLine
    }
}

/// Combines the shard runs of one logical run (`lnlens dla`, `patch` or `eval --shard I/N`, one
/// database per shard) into one run of an output database, as if it had run unsharded: the same
/// prompts and result rows under the same prompt indices, summaries recomputed from all rows with
/// the jobs' own code (NMAE over all prompts, not a mean of the shards' NMAEs; eval's loss over
/// all windows), each shard's provenance in `run_shards`. The merged run is written in one transaction; other runs of the output are not
/// touched; merging the same shards again writes nothing (`MergeOutcome.alreadyMerged`).
///
/// Each shard database is opened read-only on its own connection, one at a time, so any number of
/// shards can be merged. Which runs of the shard databases are merged:
/// - only sharded runs (`runs.shard_count` set); in a database holding any of `runIDs`, only those;
/// - when every database holds exactly one, they are the shards of one run and must agree on
///   everything that changes results (model hash, prompt set hash, prompt count, LN mode,
///   weight processing, result options, tool version, shard count);
/// - when a database holds several (e.g. `dla --model A --model B --shard I/N` stores one run
///   per model), they are grouped by model hash and each group is merged into its own run;
/// - one database holding the same shard of the same run several times (an interrupted attempt
///   and a fresh run, say) contributes its one completed run; with several completed, choose
///   with `runIDs`.
/// Every shard of each run must be given once and be completed.
public struct MergeJob {
    public var outputPath: String
    public var shardPaths: [String]
    /// `--run ID`: in a shard database holding sharded runs with these ids, consider only those
    /// (other databases are unaffected; empty: all runs everywhere).
    public var runIDs: Set<Int64> = []

    public init(outputPath: String, shardPaths: [String], runIDs: Set<Int64> = []) {
        self.outputPath = outputPath
        self.shardPaths = shardPaths
        self.runIDs = runIDs
    }

    /// What each command's merged run needs: the options that change its numbers, and its
    /// summaries and estimator errors recomputed from all its result rows (and its options, and
    /// what the first shard's summaries record of its models: eval's per-model LN modes).
    struct Recipe: Sendable {
        /// `O.sameComputation` of two shards' stored options.
        let sameComputation: @Sendable (String, String) -> OptionDifference?
        /// The shards' options as the merged run's (`ShardOptions.merged`).
        let mergedOptions: @Sendable (_ optionsJSON: String, _ output: String) -> String
        let summaries: @Sendable ([ResultRow], _ optionsJSON: String, _ shardSummaries: [SummaryRow]) -> [SummaryRow]
        var errors: @Sendable ([ResultRow], _ optionsJSON: String) -> [ErrorRow] = { _, _ in [] }
        /// Runs that store edges (`edges`): the summaries from the result and per-prompt edge rows
        /// (instead of `summaries`); the aggregate edge rows are recomputed from all shards' rows.
        var edgeSummaries: (@Sendable ([ResultRow], [EdgeRow], _ optionsJSON: String) -> [SummaryRow])?
        /// The runs store no prompts: their units (the indices shards split) are the result rows'
        /// prompt indices, and every site holds each one (eval: a window's loss per model).
        var unitsInResults = false
        /// What a unit is called in messages.
        var unit = "prompt"

        init<O: ShardOptions>(_: O.Type, summaries: @escaping @Sendable ([ResultRow], O, [SummaryRow]) -> [SummaryRow],
                              errors: @escaping @Sendable ([ResultRow], O) -> [ErrorRow] = { _, _ in [] },
                              unitsInResults: Bool = false, unit: String = "prompt",
                              edgeSummaries: (@Sendable ([ResultRow], [EdgeRow], O) -> [SummaryRow])? = nil) {
            sameComputation = { O.sameComputation($0, $1) }
            mergedOptions = { O(json: $0).merged(into: $1).json }
            self.summaries = { summaries($0, O(json: $1), $2) }
            self.errors = { errors($0, O(json: $1)) }
            if let edgeSummaries {
                self.edgeSummaries = { rows, edges, json in edgeSummaries(rows, edges, O(json: json)) }
            }
            (self.unitsInResults, self.unit) = (unitsInResults, unit)
        }
    }

    static let recipes: [String: Recipe] = [
        StoreName.dlaCommand: Recipe(DLAOptions.self, summaries: { rows, options, _ in
            DLAJob.summaries(from: rows, minGap: options.minGap, bootstrap: options.bootstrap ?? .crossed)
        }),
        StoreName.patchCommand: Recipe(PatchOptions.self, summaries: { rows, options, _ in PatchJob.summaries(from: rows, minGap: options.minGap) },
                                       errors: { PatchJob.errors(from: $0, minGap: $1.minGap) }),
        StoreName.evalCommand: Recipe(EvalOptions.self,
                                      summaries: { rows, _, shard in EvalJob.summaries(from: rows, lnModes: EvalJob.lnModes(from: shard)) },
                                      unitsInResults: true, unit: "window"),
        SinkAnalysis.command: analysisRecipe(SinkAnalysis.self),
        NormAnalysis.command: analysisRecipe(NormAnalysis.self),
        LensAnalysis.command: analysisRecipe(LensAnalysis.self),
        CompareAnalysis.command: analysisRecipe(CompareAnalysis.self),
        StoreName.edgesCommand: Recipe(EdgeOptions.self, summaries: { _, _, _ in [] },
                                       edgeSummaries: { EdgeJob.summaries(from: $0, edges: $1, minGap: $2.minGap) }),
        StoreName.neuronsCommand: Recipe(NeuronOptions.self, summaries: { rows, _, _ in NeuronJob.summaries(from: rows) },
                                         unit: "ablation"),
    ]

    /// A one-pass analysis: units (windows or prompts) counted from its rows, summaries recomputed
    /// from every shard's rows.
    static func analysisRecipe<A: SequenceAnalysis>(_: A.Type) -> Recipe {
        Recipe(AnalysisOptions.self, summaries: { rows, _, _ in A.summaries(from: rows) }, unitsInResults: true, unit: "unit")
    }

    /// The units (prompt indices) a shard run holds, given its stored prompts and result rows.
    static func units(_ recipe: Recipe, prompts: [PromptRow], results: [ResultRow]) -> [Int] {
        recipe.unitsInResults ? Set(results.map(\.promptIndex)).sorted() : prompts.map(\.promptIndex)
    }

    /// One sharded run found in a shard database.
    public struct ShardRun: Sendable {
        /// The database as given on the command line.
        public var path: String
        public var record: RunRecord
        /// Prompts stored (eval: windows).
        public var prompts: Int
        var shard: String { record.shardLabel ?? "?" }
        var id: Int64 { record.id! }
    }

    /// The shards of one logical run, by shard index.
    public struct Plan: Sendable {
        public var shards: [ShardRun]
        public var first: RunRecord { shards[0].record }
    }

    /// One merged run of the output.
    public struct Merged: Sendable {
        public var outcome: MergeOutcome
        public var record: RunRecord
        public var shards: Int
        /// As stored in the output.
        public var summaries: [SummaryRow]
    }

    /// Reads the shard databases and groups their runs into logical runs, refusing what does not
    /// belong together. Writes nothing.
    public func plan() throws -> [Plan] {
        guard !shardPaths.isEmpty else { throw MergeError.noShards }
        let outputKey = Self.fileKey(outputPath), outputIdentity = Files.identity(outputPath)
        var seen: [String: String] = [:], seenIdentities = Set<FileIdentity>()
        for path in shardPaths {
            let key = Self.fileKey(path), identity = Files.identity(path)
            // By path and by file identity: a hard link to the output is the output.
            if key == outputKey || (identity != nil && identity == outputIdentity) { throw MergeError.outputIsShard(path: path) }
            if seen[key] != nil || identity.map({ !seenIdentities.insert($0).inserted }) == true {
                throw MergeError.givenTwice(path: path)
            }
            seen[key] = path
        }
        // Every sharded run of every database, in the order given.
        var perFile: [[ShardRun]] = []
        var chosen = Set<Int64>()
        for path in shardPaths {
            let db = try ResultsDatabase.openReadOnly(path: path)
            // The whole file, not only the runs merged: a damaged index loses rows silently.
            if let problems = try db.integrityProblems() {
                throw MergeError.damaged(path: path, problem: problems.prefix(2).joined(separator: "; "))
            }
            var sharded = try db.runs().filter { $0.shardCount != nil }
            if sharded.isEmpty { throw MergeError.noShardedRun(path: path) }
            let named = sharded.filter { runIDs.contains($0.id!) }
            if !named.isEmpty { sharded = named }
            chosen.formUnion(named.map { $0.id! })
            perFile.append(try sharded.map { record in
                // A completed shard must still hold the rows it recorded when it completed.
                _ = try db.verifiedRun(id: record.id!)
                guard let recipe = Self.recipes[record.command] else {
                    throw MergeError.notMergeable(path: path, runID: record.id!, command: record.command)
                }
                let prompts = recipe.unitsInResults
                    ? Self.units(recipe, prompts: [], results: try db.results(runID: record.id!)).count
                    : try db.counts(runID: record.id!).prompts
                return ShardRun(path: path, record: record, prompts: prompts)
            })
        }
        if let unused = runIDs.subtracting(chosen).min() { throw MergeError.unknownRun(id: unused) }
        // One run per database: the shards of one run. Several: one logical run per model.
        let single = perFile.allSatisfy { $0.count == 1 }
        var groups: [[ShardRun]] = []
        var groupOf: [String: Int] = [:]
        for run in perFile.flatMap({ $0 }) {
            let key = single ? "" : run.record.modelHash
            if let g = groupOf[key] { groups[g].append(run) } else { groupOf[key] = groups.count; groups.append([run]) }
        }
        return try groups.map { try Self.check(group: $0, compareModel: single) }
    }

    /// One logical run's shards: attempts in one file resolved, fields compared, every shard
    /// present once and completed.
    static func check(group: [ShardRun], compareModel: Bool) throws -> Plan {
        // The same shard several times in one database: its one completed run; several completed: ambiguous.
        var order: [String] = [], attempts: [String: [ShardRun]] = [:]
        for run in group {
            let key = "\(run.record.shardIndex!)\u{0}\(run.path)"
            if attempts[key] == nil { order.append(key) }
            attempts[key, default: []].append(run)
        }
        var runs: [ShardRun] = []
        for same in order.map({ attempts[$0]! }) {
            let completed = same.filter { $0.record.status == .completed }
            switch completed.count {
            case 1: runs.append(completed[0])
            case 0: runs.append(same.max { $0.id < $1.id }!)  // the latest attempt, refused below as unfinished
            default: throw MergeError.ambiguous(path: same[0].path, runIDs: completed.map(\.id).sorted(), shard: same[0].shard)
            }
        }
        let reference = runs[0]
        for run in runs.dropFirst() {
            if let (field, value, other) = difference(run.record, reference.record, compareModel: compareModel) {
                throw MergeError.doesNotBelong(path: run.path, runID: run.id, field: field, value: value,
                                               otherPath: reference.path, otherRunID: reference.id, otherValue: other)
            }
        }
        var byIndex: [Int: ShardRun] = [:]
        for run in runs {
            if let other = byIndex[run.record.shardIndex!] {
                throw MergeError.duplicateShard(shard: run.shard, path: run.path, runID: run.id, otherPath: other.path,
                                                otherRunID: other.id)
            }
            byIndex[run.record.shardIndex!] = run
        }
        let count = reference.record.shardCount!
        let missing = (0..<count).filter { byIndex[$0] == nil }
        if !missing.isEmpty {
            throw MergeError.missingShards(missing: missing.map { "\($0)/\(count)" }, what: describe(reference.record),
                                           given: count - missing.count)
        }
        let ordered = (0..<count).map { byIndex[$0]! }
        if let bad = ordered.first(where: { $0.record.status != .completed }) {
            throw MergeError.notCompleted(path: bad.path, runID: bad.id, shard: bad.shard, status: bad.record.status.rawValue)
        }
        return Plan(shards: ordered)
    }

    /// The first field in which two shard runs differ such that they cannot be one run:
    /// (name, value of `a`, value of `b`).
    static func difference(_ a: RunRecord, _ b: RunRecord, compareModel: Bool) -> (String, String, String)? {
        func short(_ s: String) -> String { String(s.prefix(12)) }
        var fields: [(String, String, String)] = [("command", a.command, b.command)]
        if compareModel { fields.append(("model weights hash", short(a.modelHash), short(b.modelHash))) }
        fields.append(("prompt set hash", short(a.promptSetHash), short(b.promptSetHash)))
        // Options before the prompt count: a text's window count follows from --context.
        if let d = recipes[b.command]?.sameComputation(a.optionsJSON, b.optionsJSON) {
            fields.append(("option \(d.key)", d.a ?? "unset", d.b ?? "unset"))
        }
        fields += [
            ("prompt count", "\(a.nPrompts)", "\(b.nPrompts)"),
            ("LN mode", a.lnMode, b.lnMode),
            ("weight processing", a.processingJSON, b.processingJSON),
            ("tool version", a.toolVersion, b.toolVersion),
            ("shard count", "\(a.shardCount ?? 0)", "\(b.shardCount ?? 0)"),
        ]
        return fields.first { $0.1 != $0.2 }
    }

    /// "gpt2-tiny (model hash 1a2b3c4d5e6f)", for messages.
    static func describe(_ r: RunRecord) -> String {
        "\(r.command) run of \(ModelPath.shortName(r.modelPath)) (model hash \(r.modelHash.prefix(12)))"
    }

    /// The same file however it is spelled (relative, `..`, symbolic links).
    static func fileKey(_ path: String) -> String {
        URL(fileURLWithPath: path).standardizedFileURL.resolvingSymlinksInPath().path
    }

    /// Plans, then writes one merged run per logical run into the output database (created if
    /// missing). Returns them in plan order; a run merged before is reported, not written again.
    public func run() throws -> [Merged] {
        let plans = try plan()
        let output = try ResultsDatabase(path: outputPath)
        return try plans.map { try merge($0, into: output) }
    }

    func merge(_ plan: Plan, into output: ResultsDatabase) throws -> Merged {
        let first = plan.first
        let recipe = Self.recipes[first.command]!
        let provenance = plan.shards.map { s in
            ShardRow(shardIndex: s.record.shardIndex!, shardCount: s.record.shardCount!, sourcePath: Self.fileKey(s.path),
                     sourceRunID: s.id, ownerHost: s.record.ownerHost, startedAt: s.record.startedAt,
                     endedAt: s.record.endedAt, nPrompts: s.prompts)
        }
        var record = RunRecord(
            command: first.command, optionsJSON: recipe.mergedOptions(first.optionsJSON, outputPath), modelPath: first.modelPath,
            modelHash: first.modelHash, lnMode: first.lnMode, processingJSON: first.processingJSON,
            promptSetPath: first.promptSetPath, promptSetHash: first.promptSetHash, nPrompts: first.nPrompts,
            toolVersion: first.toolVersion, shard: nil, startedAt: plan.shards.map(\.record.startedAt).min()!)
        record.status = .completed
        record.endedAt = plan.shards.compactMap(\.record.endedAt).max()
        if let existing = try output.mergedRun(command: record.command, modelHash: record.modelHash,
                                               promptSetHash: record.promptSetHash, shards: provenance) {
            return Merged(outcome: .alreadyMerged(existing), record: record, shards: plan.shards.count,
                          summaries: try output.summaries(runID: existing))
        }
        let (stored, values, shardEdges, owner, firstSummaries) = try Self.read(plan, recipe)
        if let firstMissing = (0..<first.nPrompts).first(where: { owner[$0] == nil }) {
            throw MergeError.incomplete(what: Self.describe(first), unit: recipe.unit, stored: owner.count,
                                        expected: first.nPrompts, firstMissing: firstMissing)
        }
        if recipe.unitsInResults {
            for (site, rows) in Dictionary(grouping: values, by: \.site).sorted(by: { $0.key < $1.key }) {
                let held = Set(rows.map(\.promptIndex))
                if let firstMissing = (0..<first.nPrompts).first(where: { !held.contains($0) }) {
                    throw MergeError.incomplete(what: "\(Self.describe(first)) for \(site)", unit: recipe.unit, stored: held.count,
                                                expected: first.nPrompts, firstMissing: firstMissing)
                }
            }
        }
        let summaries = recipe.edgeSummaries.map { $0(values, shardEdges, first.optionsJSON) }
            ?? recipe.summaries(values, first.optionsJSON, firstSummaries)
        let errors = recipe.errors(values, first.optionsJSON)
        let prompts = stored.sorted { $0.promptIndex < $1.promptIndex }
        let edges = shardEdges + (recipe.edgeSummaries != nil ? EdgeJob.aggregates(from: shardEdges) : [])
        let outcome = try output.recordMergedRun(record, shards: provenance, prompts: prompts, values: values,
                                                 summaries: summaries, errors: errors, edges: edges)
        return Merged(outcome: outcome, record: record, shards: plan.shards.count,
                      summaries: try output.summaries(runID: outcome.runID))
    }
    /// Every shard's prompts, result rows and per-prompt edge rows, one shard at a time, each on
    /// its own read-only connection; which shard holds each unit; the first shard's summaries.
    static func read(_ plan: Plan, _ recipe: Recipe) throws
        -> ([PromptRow], [ResultRow], [EdgeRow], [Int: ShardRun], [SummaryRow]) {
        var prompts: [PromptRow] = [], values: [ResultRow] = [], edges: [EdgeRow] = []
        var owner: [Int: ShardRun] = [:]
        var firstSummaries: [SummaryRow] = []
        for shard in plan.shards {
            let db = try ResultsDatabase.openReadOnly(path: shard.path)
            guard let now = try db.run(id: shard.id), now == shard.record else {
                throw MergeError.changed(path: shard.path, runID: shard.id)
            }
            let stored = try db.prompts(runID: shard.id), rows = try db.results(runID: shard.id)
            for index in Self.units(recipe, prompts: stored, results: rows) {
                if let other = owner[index] {
                    throw MergeError.overlapping(unit: recipe.unit, index: index, path: shard.path, runID: shard.id,
                                                 otherPath: other.path, otherRunID: other.id)
                }
                owner[index] = shard
            }
            prompts += stored
            values += rows
            if recipe.edgeSummaries != nil { edges += try db.edges(runID: shard.id, aggregate: false) }
            if shard.id == plan.shards[0].id && shard.path == plan.shards[0].path { firstSummaries = try db.summaries(runID: shard.id) }
        }
        return (prompts, values, edges, owner, firstSummaries)
    }
}
