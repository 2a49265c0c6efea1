import Analysis
import Foundation
import ResultsStore
import Support

/// One stored dla run read back for printing: its summaries, every attribution, its task check
/// (`lnlens dla` prints it; `--json` in the shape of the README).
public struct DLARunReport: Encodable {
    public let runID: Int64
    public let model: String
    public let lnMode: String
    public let nPrompts: Int
    /// `I/N` of a shard run (not printed in JSON: a merged run reads back like an unsharded one).
    public let shard: String?
    public let nmaeHeadsGlobal: Double
    public let nmaePerHead: [String: Double]
    public let nmaePerLayer: [String: Double]
    public let componentsSumMaxAbsError: Double
    public let rows: [ComponentAttribution]
    /// The 95% interval of `nmaeHeadsGlobal` and how it was resampled (nil when not stored).
    public let nmaeHeadsGlobalCI: ConfidenceInterval?
    public let bootstrap: String
    /// The run's task check (`StoredRuns.taskCheck`; nil for text input and prompts without wrong).
    public let task: TaskCheck?
    /// What `nPrompts` counts: prompts, text positions (`--text`) or windows (`--targets paper`).
    public let unit: String

    /// One row of `--json`: the component by name and as the database keys it (`site`, `layer`,
    /// `head`; `pos` null: DLA attributes the final residual stream at the target position).
    public struct Row: Encodable {
        public let prompt: Int, component: String, site: String, layer: Int?, pos: Int?, head: Int?
        public let dla: Double, directEffect: Double
        enum CodingKeys: String, CodingKey { case prompt, component, site, layer, pos, head, dla, directEffect = "direct_effect" }

        public init(_ a: ComponentAttribution) {
            let site = a.component.site
            (prompt, component, self.site, layer, pos, head) = (a.prompt, a.component.description, site.name, site.layer, nil, site.head)
            (dla, directEffect) = (a.dla, a.directEffect)
        }

        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(prompt, forKey: .prompt)
            try c.encode(component, forKey: .component)
            try c.encode(site, forKey: .site)
            try c.encode(layer, forKey: .layer)  // null, not absent, like the database's NULL
            try c.encode(pos, forKey: .pos)
            try c.encode(head, forKey: .head)
            try c.encode(dla, forKey: .dla)
            try c.encode(directEffect, forKey: .directEffect)
        }
    }

    enum CodingKeys: String, CodingKey {
        case runID = "run_id", model, modelName = "model_name", lnMode = "ln_mode", nPrompts = "n_prompts", task
        case nmaeHeadsGlobal = "nmae_heads_global", nmaePerHead = "nmae_per_head", nmaePerLayer = "nmae_per_layer"
        case nmaeHeadsGlobalCI = "nmae_heads_global_ci", bootstrap
        case componentsSumMaxAbsError = "components_sum_max_abs_error", rows
    }

    /// JSON with an undefined number (NMAE when every direct effect is 0) as null, not a string.
    public func encode(to encoder: Encoder) throws {
        func finite(_ x: Double) -> Double? { x.isFinite ? x : nil }
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(runID, forKey: .runID)
        try c.encode(model, forKey: .model)
        try c.encode(modelName, forKey: .modelName)
        try c.encode(lnMode, forKey: .lnMode)
        try c.encode(nPrompts, forKey: .nPrompts)
        try c.encode(task, forKey: .task)
        try c.encode(nmaeHeadsGlobalCI.map { [finite($0.low), finite($0.high)] }, forKey: .nmaeHeadsGlobalCI)
        try c.encode(bootstrap, forKey: .bootstrap)
        try c.encode(finite(nmaeHeadsGlobal), forKey: .nmaeHeadsGlobal)
        try c.encode(nmaePerHead.mapValues(finite), forKey: .nmaePerHead)
        try c.encode(nmaePerLayer.mapValues(finite), forKey: .nmaePerLayer)
        try c.encode(finite(componentsSumMaxAbsError), forKey: .componentsSumMaxAbsError)
        try c.encode(rows.map(Row.init), forKey: .rows)
    }

    public init(db: ResultsDatabase, runID: Int64) throws {
        guard let run = try db.run(id: runID) else { throw ResultsStoreError.noSuchRun(id: runID, path: db.path) }
        self.runID = runID
        model = run.modelPath
        lnMode = run.lnMode
        nPrompts = run.nPrompts
        shard = run.shardLabel
        let summaries = try db.summaries(runID: runID)
        func pick(_ scope: String) -> [String: Double] {
            Dictionary(uniqueKeysWithValues: summaries.filter { $0.scope == scope && $0.metric == StoreName.nmae }.map { ($0.key, $0.value) })
        }
        nmaeHeadsGlobal = pick(StoreName.scopeHeads)["all"] ?? .nan
        nmaePerHead = pick(StoreName.scopeHead)
        nmaePerLayer = pick(StoreName.scopeLayer)
        componentsSumMaxAbsError = summaries.first { $0.scope == StoreName.scopeCheck }?.value ?? .nan
        rows = try StoredRuns.attributions(db: db, runID: runID)
        nmaeHeadsGlobalCI = StoredRuns.storedInterval(summaries, scope: StoreName.scopeHeads, heads: .all)
        let options = DLAOptions(json: run.optionsJSON)
        bootstrap = (options.bootstrap ?? .crossed).rawValue
        task = try StoredRuns.taskCheck(db: db, run: run)
        unit = options.unit
    }

    public var modelName: String { ModelPath.shortName(model) }
}

extension StoredRuns {
    /// The bootstrap interval a dla run stored for the NMAE over `heads` at `scope`; nil when it
    /// stored none.
    public static func storedInterval(_ summaries: [SummaryRow], scope: String, heads: HeadSet) -> ConfidenceInterval? {
        let key = heads.description
        func value(_ metric: String) -> Double? { summaries.first { $0.scope == scope && $0.key == key && $0.metric == metric }?.value }
        guard let low = value(StoreName.nmaeCILow), let high = value(StoreName.nmaeCIHigh) else { return nil }
        return ConfidenceInterval(low: low, high: high)
    }

    /// The intervals a dla run stored for all heads and for each of `layers`; nil when any of them
    /// is missing (an unfinished run, or one of an lnlens that did not store them).
    public static func storedIntervals(_ summaries: [SummaryRow], layers: some Sequence<Int>) -> NMAEIntervals? {
        guard let global = storedInterval(summaries, scope: StoreName.scopeHeads, heads: .all) else { return nil }
        var perLayer: [Int: ConfidenceInterval] = [:]
        for l in layers {
            guard let interval = storedInterval(summaries, scope: StoreName.scopeLayer, heads: .layer(l)) else { return nil }
            perLayer[l] = interval
        }
        return NMAEIntervals(headsGlobal: global, perLayer: perLayer)
    }
}

/// One stored patch run, read back for printing (`--json` in the shape of the README).
public struct PatchRunReport: Encodable {
    public struct Prompt: Encodable {
        public let prompt: Int
        public let cleanMetric: Double
        public let corruptMetric: Double
        enum CodingKeys: String, CodingKey { case prompt, cleanMetric = "clean_metric", corruptMetric = "corrupt_metric" }
    }
    public struct Row: Encodable {
        public let prompt: Int, site: String, layer: Int, pos: Int?, head: Int?
        public let activation: Double?, atp: Double?, atpStar: Double?
        enum CodingKeys: String, CodingKey { case prompt, site, layer, pos, head, activation, atp, atpStar = "atp_star" }
        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(prompt, forKey: .prompt)
            try c.encode(site, forKey: .site)
            try c.encode(layer, forKey: .layer)
            try c.encode(pos, forKey: .pos)
            try c.encode(head, forKey: .head)
            try c.encode(activation, forKey: .activation)
            try c.encode(atp, forKey: .atp)
            try c.encodeIfPresent(atpStar, forKey: .atpStar)
        }
    }
    public let runID: Int64, model: String, lnMode: String, direction: String
    public let prompts: [Prompt]
    /// site → method → metric → value (all layers, raw values).
    public let errors: [String: [String: [String: Double?]]]
    public let rows: [Row]
    public let allErrors: [ErrorRow]
    public let tokens: [Int: [String]]
    /// The run's task check (`StoredRuns.taskCheck`).
    public let task: TaskCheck?
    /// AtP*'s bound on missed effects per site kind (`--atp-star-bound`), in site order.
    public let bounds: [AtPStarBoundReport]

    enum CodingKeys: String, CodingKey {
        case runID = "run_id", model, modelName = "model_name", lnMode = "ln_mode", direction, task, prompts, errors, rows
        case bounds = "atp_star_bound"
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(runID, forKey: .runID)
        try c.encode(model, forKey: .model)
        try c.encode(modelName, forKey: .modelName)
        try c.encode(lnMode, forKey: .lnMode)
        try c.encode(direction, forKey: .direction)
        try c.encode(task, forKey: .task)
        try c.encode(prompts, forKey: .prompts)
        try c.encode(errors, forKey: .errors)
        try c.encode(rows, forKey: .rows)
        if !bounds.isEmpty { try c.encode(bounds, forKey: .bounds) }
    }

    public init(db: ResultsDatabase, runID: Int64) throws {
        guard let run = try db.run(id: runID) else { throw ResultsStoreError.noSuchRun(id: runID, path: db.path) }
        self.runID = runID
        model = run.modelPath
        lnMode = run.lnMode
        direction = PatchOptions(json: run.optionsJSON).direction
        let stored = try db.results(runID: runID)
        var clean: [Int: Double] = [:], corrupt: [Int: Double] = [:]
        struct Key: Hashable { let prompt: Int, site: String, layer: Int, pos: Int?, head: Int? }
        var values: [Key: [String: Double]] = [:]
        for r in stored {
            if r.site == PatchJob.metricSite {
                if r.quantity == PatchJob.cleanQuantity { clean[r.promptIndex] = r.value }
                if r.quantity == PatchJob.corruptQuantity { corrupt[r.promptIndex] = r.value }
            } else if let layer = r.layer {
                values[Key(prompt: r.promptIndex, site: r.site, layer: layer, pos: r.position, head: r.head), default: [:]][r.quantity] = r.value
            }
        }
        prompts = clean.keys.sorted().map { Prompt(prompt: $0, cleanMetric: clean[$0]!, corruptMetric: corrupt[$0] ?? .nan) }
        let order = PatchSite.allCases.map(\.rawValue)
        rows = values.keys.sorted {
            ($0.prompt, order.firstIndex(of: $0.site) ?? 99, $0.layer, $0.pos ?? -1, $0.head ?? -1)
                < ($1.prompt, order.firstIndex(of: $1.site) ?? 99, $1.layer, $1.pos ?? -1, $1.head ?? -1)
        }.map { k in
            let v = values[k]!
            return Row(prompt: k.prompt, site: k.site, layer: k.layer, pos: k.pos, head: k.head, activation: v[StoreName.activation],
                       atp: v[StoreName.atp], atpStar: v[StoreName.atpStar])
        }
        allErrors = try db.estimatorErrors(runID: runID)
        var errors: [String: [String: [String: Double?]]] = [:]
        for e in allErrors where e.layer == nil && !e.normalized && e.metric != "n" && e.metric != "n_structural_zeros" {
            errors[e.site, default: [:]][e.method, default: [:]][e.metric] = e.value.isFinite ? e.value : nil
        }
        self.errors = errors
        tokens = Dictionary(uniqueKeysWithValues: try db.prompts(runID: runID).compactMap { p in p.tokens.map { (p.promptIndex, $0) } })
        task = try StoredRuns.taskCheck(db: db, run: run)
        let boundRows = try db.summaries(runID: runID).filter { $0.scope == PatchJob.boundScope }
        bounds = Dictionary(grouping: boundRows, by: \.key).sorted { (order.firstIndex(of: $0.key) ?? 99) < (order.firstIndex(of: $1.key) ?? 99) }
            .map { AtPStarBoundReport(site: $0.key, values: Dictionary($0.value.map { ($0.metric, $0.value) }, uniquingKeysWith: { a, _ in a })) }
    }

    public var modelName: String { ModelPath.shortName(model) }
}

/// Means over prompts of values at (layer, index) cells, each value divided by its prompt's
/// divisor (a prompt without one left out), summed in the order given: the maps `lnlens patch`
/// prints and `lnlens report` draws.
public enum CellMeans {
    public typealias Sample = (prompt: Int, layer: Int, index: Int, value: Double)

    /// layer → index → mean, for the cells with a value; `absolute`: of |value / divisor|.
    public static func means(_ samples: some Sequence<Sample>, divisor: (Int) -> Double?,
                             absolute: Bool = false) -> [Int: [Int: Double]] {
        var sum = [Int: [Int: Double]](), count = [Int: [Int: Int]]()
        for s in samples {
            guard let d = divisor(s.prompt) else { continue }
            sum[s.layer, default: [:]][s.index, default: 0] += absolute ? abs(s.value / d) : s.value / d
            count[s.layer, default: [:]][s.index, default: 0] += 1
        }
        var means = [Int: [Int: Double]]()
        for (l, row) in sum { for (i, v) in row { means[l, default: [:]][i] = v / Double(count[l]![i]!) } }
        return means
    }
}

extension PatchRunReport {
    /// The layer × position maps of the position sites that `lnlens patch` prints: over the
    /// prompts of the most common length, each value divided by the prompt's
    /// metric(clean) − metric(corrupt), or with `normalize` by its activation patching at
    /// resid_pre (layer, position); prompts below the run's --min-gap left out.
    public struct PositionMaps {
        public struct Map {
            public let site: String
            public let method: String
            /// The layers the site has rows at, ascending.
            public let layers: [Int]
            /// layer → position → mean.
            public let means: [Int: [Int: Double]]
        }
        /// Tokens per prompt.
        public let length: Int
        /// What each value is divided by, in words.
        public let normalizedBy: String
        /// No prompt has the `normalize` cell: no map.
        public let anchorMissing: Bool
        /// Prompts of this length below --min-gap.
        public let leftOut: [Int]
        public let promptsUsed: Int
        /// The first used prompt's tokens (column labels).
        public let firstTokens: [String]
        public let maps: [Map]
    }

    public func positionMaps(normalize: GridPoint?) -> PositionMaps? {
        let lengths = Dictionary(grouping: rows.filter { $0.pos != nil && $0.head == nil }, by: { tokens[$0.prompt]?.count ?? 0 })
        guard let (T, gridRows) = lengths.max(by: { $0.value.count < $1.value.count }), T > 0 else { return nil }
        let gaps: [Int: Double] = Dictionary(uniqueKeysWithValues: prompts.map { ($0.prompt, $0.cleanMetric - $0.corruptMetric) })
        var norm: [Int: Double] = [:]
        for r in gridRows where r.site == "resid_pre" {
            if let g = normalize, r.layer == g.layer, r.pos == g.position, let a = r.activation { norm[r.prompt] = a }
        }
        let label = normalize.map { "activation patching at layer \($0.layer), position \($0.position)" } ?? "metric(clean) − metric(corrupt)"
        // Prompts below --min-gap are left out: their divisor is near 0 or their effects noise.
        let leftOut = Set(task?.smallGap ?? []).intersection(gridRows.map(\.prompt))
        let used = Set(gridRows.map(\.prompt)).subtracting(leftOut)
        func result(_ maps: [PositionMaps.Map], anchorMissing: Bool = false) -> PositionMaps {
            PositionMaps(length: T, normalizedBy: label, anchorMissing: anchorMissing, leftOut: leftOut.sorted(), promptsUsed: used.count,
                         firstTokens: used.min().flatMap { tokens[$0] } ?? [], maps: maps)
        }
        if normalize != nil && norm.isEmpty { return result([], anchorMissing: true) }
        func divisor(_ prompt: Int) -> Double? {
            guard used.contains(prompt), let d = normalize == nil ? gaps[prompt] : norm[prompt], d != 0, d.isFinite else { return nil }
            return d
        }
        var maps: [PositionMaps.Map] = []
        for site in PatchSite.allCases.map(\.rawValue) {
            let siteRows = gridRows.filter { $0.site == site }
            guard !siteRows.isEmpty else { continue }
            let layers = Set(siteRows.map(\.layer)).sorted()
            for (method, pick) in [("activation", \Row.activation), ("atp", \Row.atp)] as [(String, KeyPath<Row, Double?>)] {
                let samples = siteRows.compactMap { r in r[keyPath: pick].map { (prompt: r.prompt, layer: r.layer, index: r.pos!, value: $0) } }
                let means = CellMeans.means(samples, divisor: divisor)
                if !means.isEmpty { maps.append(.init(site: site, method: method, layers: layers, means: means)) }
            }
        }
        return result(maps)
    }
}
