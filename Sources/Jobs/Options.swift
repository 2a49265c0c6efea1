import Analysis
import Foundation

/// `max_tokens` of a text-mode dla run: a count, or `all` (stored as the text "all").
public enum TokenLimit: StoredValue {
    case all
    case count(Int)

    public init?(storedText: String) {
        if storedText == "all" { self = .all } else if let n = Int(storedText) { self = .count(n) } else { return nil }
    }

    public init(_ count: Int?) { self = count.map(TokenLimit.count) ?? .all }

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let n = try? c.decode(Int.self) { self = .count(n); return }
        guard let limit = TokenLimit(storedText: try c.decode(String.self)) else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "not a token count or all")
        }
        self = limit
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .all: try c.encode("all")
        case .count(let n): try c.encode(n)
        }
    }
}

/// `--grid-normalize LAYER,POS` of a patch run, stored as the text "L,P" (a list [L, P] reads too).
public struct GridPoint: StoredValue {
    public let layer: Int
    public let position: Int

    public init?(layer: Int, position: Int) {
        guard layer >= 0, position >= 0 else { return nil }
        (self.layer, self.position) = (layer, position)
    }

    /// `L,P` as typed after `--grid-normalize`; nil unless two numbers ≥ 0.
    public init?(storedText: String) {
        let parts = storedText.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard parts.count == 2 else { return nil }
        self.init(layer: parts[0], position: parts[1])
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        let point = (try? c.decode([Int].self)).flatMap { $0.count == 2 ? GridPoint(layer: $0[0], position: $0[1]) : nil }
            ?? (try? c.decode(String.self)).flatMap(GridPoint.init(storedText:))
        guard let point else { throw DecodingError.dataCorruptedError(in: c, debugDescription: "not LAYER,POS") }
        self = point
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode("\(layer),\(position)")
    }
}

/// The task check's `--min-gap` as a run recorded it: the default for runs that predate it, and
/// for a value no lnlens writes (negative, NaN: a hand-edited row).
func minGap(_ stored: Double?) -> Double {
    guard let gap = stored, gap.isFinite, gap >= 0 else { return TaskCheck.defaultMinGap }
    return gap
}

/// Options of a job whose shards `MergeJob` combines.
public protocol ShardOptions: JobOptions where Record: ShardRecord {}

/// The record of a job whose shards `MergeJob` combines.
public protocol ShardRecord {
    var db: String? { get set }
    var shard: String? { get set }
}

extension ShardOptions {
    /// These options as the merged run's: without the shard, with `output` as the database
    /// (when one is recorded).
    public func merged(into output: String) -> Self {
        var o = self
        o.record.shard = nil
        if o.record.db != nil { o.record.db = output }
        return o
    }
}

/// The options of a `dla` run.
public struct DLAOptions: ShardOptions {
    /// What changes the stored numbers. Batch and chunk sizes are among them because they decide
    /// which prompts share a matrix product, which moves results in the last float digits.
    public struct Computation: Codable, Equatable, Sendable {
        @Stored public var prependBOS: Bool?
        @Stored public var skipInvalid: Bool?
        /// Text mode: the window length used.
        @Stored public var context: Int?
        @Stored public var maxTokens: TokenLimit?
        /// Text mode: `next-token` or `paper` (`TextTargets`).
        @Stored public var targets: String?
        @Stored public var batchSize: Int?
        @Stored public var chunkSize: Int?
        @Stored public var minGap: Double?
        /// `BootstrapScheme`.
        @Stored public var bootstrap: String?
        /// Dataset mode: the rows' key (`--field`) and how many rows were read (`--rows`).
        @Stored public var field: String?
        @Stored public var rows: Int?
        public init() {}
        enum CodingKeys: String, CodingKey {
            case prependBOS = "prepend_bos", skipInvalid = "skip_invalid", context, maxTokens = "max_tokens", targets
            case batchSize = "batch_size", chunkSize = "chunk_size", minGap = "min_gap", bootstrap, field, rows
        }
    }

    /// Provenance: what was run and where it was stored.
    public struct Record: Codable, Equatable, Sendable, ShardRecord {
        /// Every `--model` of the invocation, comma-separated.
        @Stored public var models: String?
        @Stored public var db: String?
        @Stored public var prompts: String?
        @Stored public var text: String?
        /// `--dataset FILE.jsonl` (its SHA-256 is the run's `prompt_set_hash`).
        @Stored public var dataset: String?
        /// Dataset mode: the rows read that were shorter than the context, skipped.
        @Stored public var skippedRows: Int?
        /// `I/N`.
        @Stored public var shard: String?
        /// The weight-processing switches.
        @Stored public var processing: [String: Bool]?
        public init() {}
        enum CodingKeys: String, CodingKey {
            case models, db, prompts, text, dataset, skippedRows = "skipped_rows", shard, processing
        }
    }

    public var computation = Computation()
    public var record = Record()
    public init() {}

    public var minGap: Double { Jobs.minGap(computation.minGap) }
    /// How the NMAE intervals resample; nil when not recorded.
    public var bootstrap: BootstrapScheme? { computation.bootstrap.flatMap(BootstrapScheme.init(rawValue:)) }

    /// What the run's prompt indices count: prompts, text positions (`--text`, `--dataset`), or
    /// windows (`--targets paper`).
    public var unit: String {
        record.text == nil && record.dataset == nil ? "prompts"
            : computation.targets == TextTargets.lastTokenOfWindow.rawValue ? "windows" : "positions"
    }
}

/// The options of a `patch` run.
public struct PatchOptions: ShardOptions {
    public struct Computation: Codable, Equatable, Sendable {
        @Stored public var prependBOS: Bool?
        @Stored public var skipInvalid: Bool?
        /// `PatchSite`s, comma-separated.
        @Stored public var sites: String?
        /// `PatchMethod`s, comma-separated.
        @Stored public var methods: String?
        /// `PatchDirection`.
        @Stored public var direction: String?
        @Stored public var batchSize: Int?
        @Stored public var chunkSize: Int?
        @Stored public var minGap: Double?
        /// The linearised variants run (`--freeze`, `--decompose`), `;`-separated `Freeze` names
        /// (`attention,mlp`; `none;attention;mlp;ln;all`); absent: the model itself.
        @Stored public var freeze: String?
        /// `--atp-star-bound`: its settings (`AtPStarBoundSettings`); absent without it.
        @Stored public var boundTop: Int?
        @Stored public var boundSubsets: Int?
        @Stored public var boundInclusion: Double?
        @Stored public var boundConfidence: Double?
        @Stored public var boundSeed: UInt64?
        public init() {}
        enum CodingKeys: String, CodingKey {
            case prependBOS = "prepend_bos", skipInvalid = "skip_invalid", sites, methods, direction
            case batchSize = "batch_size", chunkSize = "chunk_size", minGap = "min_gap", freeze
            case boundTop = "atp_star_bound_top", boundSubsets = "atp_star_bound_subsets", boundInclusion = "atp_star_bound_inclusion"
            case boundConfidence = "atp_star_bound_confidence", boundSeed = "atp_star_bound_seed"
        }
    }

    public struct Record: Codable, Equatable, Sendable, ShardRecord {
        @Stored public var models: String?
        @Stored public var db: String?
        @Stored public var prompts: String?
        @Stored public var processing: [String: Bool]?
        /// Only printing and `report` use it (a resume may change it).
        @Stored public var gridNormalize: GridPoint?
        /// Not recorded by `patch` (its shard is the run's `shard_index`).
        @Stored public var shard: String?
        public init() {}
        enum CodingKeys: String, CodingKey { case models, db, prompts, processing, gridNormalize = "grid_normalize", shard }
    }

    public var computation = Computation()
    public var record = Record()
    public init() {}

    public var minGap: Double { Jobs.minGap(computation.minGap) }
    public var direction: String { computation.direction ?? PatchDirection.denoise.rawValue }
}

/// The options of an `eval` run.
public struct EvalOptions: ShardOptions {
    /// `batch` is among them because the windows that share a forward pass move a window's loss
    /// in the last float digits (with 1 every shard's losses are the unsharded run's bit for
    /// bit); `chunk_size` too: a pass never spans two chunks.
    public struct Computation: Codable, Equatable, Sendable {
        @Stored public var context: Int?
        @Stored public var batch: Int?
        @Stored public var chunkSize: Int?
        /// `--token-dtype` of a headerless token file; `--field` of a dataset.
        @Stored public var tokenDtype: String?
        @Stored public var field: String?
        public init(context: Int? = nil, batch: Int? = nil, chunkSize: Int? = nil) {
            (self.context, self.batch, self.chunkSize) = (context, batch, chunkSize)
        }
        enum CodingKeys: String, CodingKey { case context, batch, chunkSize = "chunk_size", tokenDtype = "token_dtype", field }
    }

    public struct Record: Codable, Equatable, Sendable, ShardRecord {
        /// The models as given, comma-separated.
        @Stored public var models: String?
        /// Each model's LN mode, comma-separated in the order of `models`.
        @Stored public var lnModes: String?
        /// The input, one of `--text`, `--tokens`, `--dataset` (its hash is the run's `prompt_set_hash`).
        @Stored public var text: String?
        @Stored public var tokens: String?
        @Stored public var dataset: String?
        @Stored public var db: String?
        @Stored public var shard: String?
        public init() {}
        enum CodingKeys: String, CodingKey { case models, lnModes = "ln_modes", text, tokens, dataset, db, shard }
    }

    public var computation = Computation()
    public var record = Record()
    public init() {}
}

/// The options of a `train` or `remove-ln` run.
public struct TrainOptions: JobOptions {
    /// Everything that shapes the trained weights (and the file written: `dtype`); the
    /// LayerNorm-removal settings only for `remove-ln`.
    public struct Computation: Codable, Equatable, Sendable {
        @Stored public var corpus: String?
        @Stored public var seqLen: Int?
        @Stored public var batchTokens: Int?
        @Stored public var microBatch: Int?
        @Stored public var weightDecay: Double?
        @Stored public var maxGradNorm: Double?
        @Stored public var seed: UInt64?
        @Stored public var dtype: String?
        @Stored public var lr: Double?
        @Stored public var minLr: Double?
        @Stored public var warmup: Int?
        /// The learning-rate schedule's horizon (`--schedule-steps`, also spelt `--steps`).
        @Stored public var steps: Int?
        /// `--stop-at`: the steps run when fewer than `steps` (unset: the whole schedule).
        @Stored public var stopAt: Int?
        /// `remove-ln --recipe` (`RemovalRecipe.Name`); every value it sets is stored beside it.
        @Stored public var recipe: String?
        @Stored public var keepLN: Bool?
        @Stored public var auxWeight: Double?
        @Stored public var momentum: Double?
        /// The sequences per σ update that `momentum` refers to (the companion's micro-batch).
        @Stored public var momentumSequences: Int?
        /// `--sigma-update micro-batch|step` (`SigmaUpdate`); unset in runs that updated once per step.
        @Stored public var sigmaUpdate: String?
        /// The companion's numerics (`remove-ln`): `--mask-eot-targets`, `--aux-target content|all`,
        /// `--decay-ln-weights`; unset in runs made before they were options (none of them applied).
        @Stored public var maskEOTTargets: Bool?
        @Stored public var auxTarget: String?
        @Stored public var decayLNWeights: Bool?
        /// Dropout in the training passes (`--dropout`, `--embd-pdrop`, `--attn-pdrop`,
        /// `--resid-pdrop`): each stored only when not 0 (unset in runs without dropout).
        @Stored public var embdPdrop: Double?
        @Stored public var attnPdrop: Double?
        @Stored public var residPdrop: Double?
        /// The removal schedule, `h.0.ln_2@20,…`.
        @Stored public var schedule: String?
        /// The data when not `corpus`: a token file (`--tokens`, `--token-dtype` for a headerless
        /// one) or a JSON Lines dataset (`--dataset`, `--field`).
        @Stored public var tokens: String?
        @Stored public var tokenDtype: String?
        @Stored public var dataset: String?
        @Stored public var field: String?
        public init() {}
        enum CodingKeys: String, CodingKey {
            case corpus, seqLen = "seq_len", batchTokens = "batch_tokens", microBatch = "micro_batch", weightDecay = "weight_decay"
            case maxGradNorm = "max_grad_norm", seed, dtype, lr, minLr = "min_lr", warmup, steps, stopAt = "stop_at", recipe
            case keepLN = "keep_ln", auxWeight = "aux_weight", momentum, momentumSequences = "momentum_sequences", schedule
            case sigmaUpdate = "sigma_update", maskEOTTargets = "mask_eot_targets", auxTarget = "aux_target"
            case decayLNWeights = "decay_ln_weights", embdPdrop = "embd_pdrop", attnPdrop = "attn_pdrop", residPdrop = "resid_pdrop"
            case tokens, tokenDtype = "token_dtype", dataset, field
        }
    }

    /// What never changes the trained weights: a resume may give other values.
    public struct Record: Codable, Equatable, Sendable {
        @Stored public var out: String?
        @Stored public var db: String?
        /// `--save-every` (also spelt `--checkpoint-every`).
        @Stored public var checkpointEvery: Int?
        /// `--keep-all`: every checkpoint kept.
        @Stored public var keepAll: Bool?
        /// `train --init` ("" when not given).
        @Stored public var initConfig: String?
        /// `train --from` ("" when not given).
        @Stored public var from: String?
        /// `remove-ln MODEL`.
        @Stored public var model: String?
        public init() {}
        enum CodingKeys: String, CodingKey {
            case out, db, checkpointEvery = "checkpoint_every", keepAll = "keep_all", initConfig = "init", from, model
        }
    }

    public var computation = Computation()
    public var record = Record()
    public init() {}
}
