import Foundation
import GPT2
import Support
import TensorCore

/// A training run's state on disk, enough to continue with bit-identical parameters: the
/// parameters and AdamW's moments (F32, by checkpoint name), AdamW's step count, the LayerNorm
/// removal's σ averages, the step reached, and the settings a resume must match; with the
/// model's `config.json` and tokenizer files, so that `export --step` can write it as a model.
/// Kept in `<out>/checkpoints/step-NNNNNN/`, built under a temporary name and renamed into place,
/// its `state.json` written last; once a newer one is complete, older steps are deleted, or with
/// `keepAll` kept without AdamW's moments (exportable; only the newest resumes).
public struct TrainingCheckpoint: Codable, Equatable {
    public var stepsDone: Int
    public var adamSteps: Int
    public var settings: TrainingSettings
    public var layerNorms: FakeLayerNorms?
    /// The stored run this training writes its steps to (nil without a store).
    public var runID: Int64?
    /// Hash of the corpus tokens, so a resume reads the same text.
    public var corpusHash: String
    /// Seconds of training so far (for the ETA after a resume).
    public var seconds: Double

    static let folder = "checkpoints"
    static let stateFile = "state.json"
    static let parametersFile = "parameters.safetensors"
    static let momentFiles = ["adam_m.safetensors", "adam_v.safetensors"]
    static var tensorFiles: [String] { [parametersFile] + momentFiles }

    public static func directory(out: URL) -> URL { out.appendingPathComponent(folder) }

    /// The folder name of step `step`'s checkpoint (`step-000300`).
    static func name(step: Int) -> String { String(format: "step-%06d", step) }

    /// Saves `trainer`'s state under `out` with the tokenizer files of `tokenizerFrom`; once it is
    /// in place, older checkpoints are removed, or with `keepAll` lose only their moments.
    public static func save(_ trainer: Trainer, out: URL, runID: Int64?, corpusHash: String, seconds: Double,
                            keepAll: Bool = false, tokenizerFrom: URL? = nil) throws {
        let fm = FileManager.default
        let root = directory(out: out)
        try fm.createDirectory(at: root, withIntermediateDirectories: true)
        let name = name(step: trainer.step)
        let final = root.appendingPathComponent(name)
        let staging = root.appendingPathComponent(".\(name).tmp-\(getpid())")
        try? fm.removeItem(at: staging)
        try fm.createDirectory(at: staging, withIntermediateDirectories: false)
        let copies = [trainer.model.parameters, trainer.optimizer.m, trainer.optimizer.v]
        for (file, copy) in zip(tensorFiles, copies) {
            try SafetensorsWriter.write(copy.checkpointTensors(), to: staging.appendingPathComponent(file))
        }
        try CheckpointExport.writeConfig(trainer.model.config, into: staging)
        if let tokenizerFrom { try CheckpointExport.copyTokenizer(from: tokenizerFrom, into: staging) }
        let state = TrainingCheckpoint(stepsDone: trainer.step, adamSteps: trainer.optimizer.steps, settings: trainer.settings,
                                       layerNorms: trainer.layerNorms, runID: runID, corpusHash: corpusHash, seconds: seconds)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try Files.writeAtomically(try encoder.encode(state), to: staging.appendingPathComponent(stateFile))
        if fm.fileExists(atPath: final.path) { try fm.removeItem(at: final) }
        guard rename(staging.path, final.path) == 0 else {
            throw GPT2Error.writeFailed(file: final.path, reason: String(cString: strerror(errno)))
        }
        for old in try fm.contentsOfDirectory(atPath: root.path) where old.hasPrefix("step-") && old != name {
            let folder = root.appendingPathComponent(old)
            if keepAll {
                for file in momentFiles { try? fm.removeItem(at: folder.appendingPathComponent(file)) }
            } else {
                try? fm.removeItem(at: folder)
            }
        }
    }

    /// The newest complete checkpoint under `out` that a training can resume from (its state and
    /// every tensor file present), if any.
    public static func latest(out: URL) -> URL? {
        let fm = FileManager.default
        return kept(out: out).reversed().map { directory(out: out).appendingPathComponent(name(step: $0)) }
            .first { folder in tensorFiles.allSatisfy { fm.fileExists(atPath: folder.appendingPathComponent($0).path) } }
    }

    /// The steps of the checkpoints under `out` with a state (kept ones included), ascending.
    public static func kept(out: URL) -> [Int] {
        let root = directory(out: out)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []
        return names.compactMap { n -> Int? in
            guard n.hasPrefix("step-"), let step = Int(n.dropFirst(5)), n == name(step: step),
                  FileManager.default.fileExists(atPath: root.appendingPathComponent(n).appendingPathComponent(stateFile).path)
            else { return nil }
            return step
        }.sorted()
    }

    /// Reads the state of checkpoint folder `url`.
    public static func read(_ url: URL) throws -> TrainingCheckpoint {
        let file = url.appendingPathComponent(stateFile)
        let data: Data
        do { data = try Files.read(file) } catch { throw TrainingError.checkpointCorrupt(file: file.path, reason: error.description) }
        return try decode(data, file: file.path)
    }

    /// A `state.json`'s checkpoint, refused (`checkpointCorrupt` naming `file`) unless it is one
    /// lnlens could have written: steps within the run, counts not negative, every σ finite and
    /// positive, one σ slot per layer, a schedule within the steps. A resume then never indexes
    /// past an array or trains from a negative step.
    public static func decode(_ data: Data, file: String) throws -> TrainingCheckpoint {
        let state: TrainingCheckpoint
        do {
            state = try JSONDecoder().decode(TrainingCheckpoint.self, from: data)
        } catch {
            throw TrainingError.checkpointCorrupt(file: file, reason: "not a checkpoint state (\(String(describing: error).oneLine.prefix(160)))")
        }
        if let problem = state.problem {
            throw TrainingError.checkpointCorrupt(file: file, reason: problem)
        }
        return state
    }

    /// What makes this state one lnlens never writes, or nil.
    var problem: String? {
        let s = settings
        if s.seqLen < 1 || s.sequencesPerStep < 1 || s.microBatch < 1 || s.steps < 1 { return "its batch settings are not positive" }
        if !(0...s.steps).contains(stepsDone) { return "step \(stepsDone) is outside the run's 0…\(s.steps)" }
        if adamSteps < 0 || adamSteps > stepsDone { return "AdamW's step count \(adamSteps) does not fit step \(stepsDone)" }
        if !(seconds.isFinite && seconds >= 0) { return "its time \(seconds) is not a duration" }
        let lr = s.learningRate
        if !([lr.peak, lr.floor, s.maxGradNorm, s.auxWeight, s.adamW.weightDecay].allSatisfy { $0.isFinite && $0 >= 0 })
            || lr.warmupSteps < 0 || lr.totalSteps < 1 {
            return "its optimizer settings are out of range"
        }
        if let ln = layerNorms {
            let n = ln.schedule.nLayers
            if n < 1 || ln.ln1Sigma.count != n || ln.ln2Sigma.count != n { return "its σ arrays do not match its \(n) layers" }
            let sigmas = (ln.ln1Sigma + ln.ln2Sigma + [ln.lnFinalSigma]).compactMap { $0 }
            if !sigmas.allSatisfy({ $0.isFinite && $0 > 0 }) { return "a σ is not a positive number" }
            if !(ln.momentum >= 0 && ln.momentum < 1) { return "its σ momentum \(ln.momentum) is outside [0, 1)" }
            if ln.schedule.events.contains(where: { $0.step < 0 }) { return "its removal schedule has a negative step" }
        }
        return nil
    }

    /// Loads the parameters and moments of checkpoint folder `url` into `trainer` and sets its
    /// step, AdamW step count and LayerNorm state.
    public func restore(into trainer: Trainer, from url: URL) throws {
        let copies = [trainer.model.parameters, trainer.optimizer.m, trainer.optimizer.v]
        for (file, copy) in zip(Self.tensorFiles, copies) {
            try Self.readTensors(url.appendingPathComponent(file), into: copy)
        }
        trainer.optimizer.steps = adamSteps
        trainer.layerNorms = layerNorms
        trainer.step = stepsDone
    }

    /// Reads every checkpoint tensor of `copy`'s table from the safetensors file `path` (F32, by
    /// checkpoint name), refusing a missing or misshapen one (`checkpointCorrupt`).
    static func readTensors(_ path: URL, into copy: ModelParameters) throws {
        do {
            let st = try SafetensorsFile(url: path)
            for e in copy.table.checkpointEntries {
                let entry = try st.entry(e.name)
                guard entry.dtype == .f32, entry.shape == e.shape else {
                    throw TrainingError.checkpointCorrupt(file: path.path, reason: "tensor \(e.name) is \(entry.dtype.rawValue) \(entry.shape), expected F32 \(e.shape)")
                }
                try st.read(e.name, into: copy.arena.base + e.offset)
            }
        } catch let e as TrainingError {
            throw e
        } catch {
            throw TrainingError.checkpointCorrupt(file: path.path, reason: (error as? LocalizedError)?.errorDescription ?? "\(error)")
        }
    }
}

extension TrainingCheckpoint {
    /// The weights and config a training writes after `stepsDone` steps (a copy; `parameters` is
    /// not changed): as they are for `train` and `--keep-ln`, in the released LN-free encoding
    /// once every LayerNorm is removed; refused while one is still real (`checkpoint` names where).
    public static func exportable(_ parameters: ModelParameters, config: GPT2Config, layerNorms: FakeLayerNorms?,
                                  stepsDone: Int, checkpoint: String) throws -> (ModelParameters, GPT2Config) {
        let weights = try ModelParameters(table: parameters.table)
        weights.copy(from: parameters)
        guard let ln = layerNorms, !ln.keepLN else { return (weights, config) }
        if let pending = ln.schedule.events.first(where: { $0.step >= stepsDone }) {
            throw TrainingError.removalIncomplete(checkpoint: checkpoint, stepsDone: stepsDone, pending: pending.path.name, at: pending.step)
        }
        return (weights, ln.encodeLNFree(weights, config: config))
    }

    /// Writes the checkpoint of step `step` kept under the training folder `run` as a model
    /// folder `to` (as the training's own export does: LN-free for a finished removal), with
    /// `precision`, replacing `to` only with `force`. Returns the checkpoint's state.
    @discardableResult
    public static func exportStep(_ step: Int, run: URL, to: URL, precision: CheckpointExport.Precision, force: Bool,
                                  metadata: [String: String]) throws -> TrainingCheckpoint {
        let folder = directory(out: run).appendingPathComponent(name(step: step))
        guard kept(out: run).contains(step) else {
            throw TrainingError.checkpointStepMissing(directory: directory(out: run).path, step: step, kept: kept(out: run))
        }
        let state = try read(folder)
        let configFile = folder.appendingPathComponent("config.json")
        guard FileManager.default.fileExists(atPath: configFile.path) else {
            throw TrainingError.checkpointCorrupt(file: configFile.path, reason: "it is missing (checkpoints written before lnlens kept the model's config cannot be exported)")
        }
        let config = try GPT2Config.parse(try Files.read(configFile), file: configFile.path)
        let file = folder.appendingPathComponent(parametersFile)
        let untied = (try? SafetensorsFile(url: file))?.entries["lm_head.weight"] != nil
        let parameters = try ModelParameters(table: ParameterTable(config: config, storedLMHead: untied, separateUnembedding: false))
        try readTensors(file, into: parameters)
        let (weights, out) = try exportable(parameters, config: config, layerNorms: state.layerNorms, stepsDone: state.stepsDone,
                                            checkpoint: folder.path)
        let tokenizer = FileManager.default.fileExists(atPath: folder.appendingPathComponent("vocab.json").path) ? folder : nil
        try CheckpointExport.save(weights, config: out, to: to, tokenizerFrom: tokenizer, precision: precision,
                                  metadata: metadata, force: force)
        return state
    }
}
