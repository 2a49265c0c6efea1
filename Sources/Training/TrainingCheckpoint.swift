import Foundation
import GPT2
import Support
import TensorCore

/// A training run's state on disk, enough to continue with bit-identical parameters: the
/// parameters and AdamW's moments (F32, by checkpoint name), AdamW's step count, the LayerNorm
/// removal's σ averages, the step reached, and the settings a resume must match. Kept in
/// `<out>/checkpoints/step-NNNNNN/`, built under a temporary name and renamed into place, its
/// `state.json` written last; older steps are deleted once a newer one is complete.
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
    static let tensorFiles = ["parameters.safetensors", "adam_m.safetensors", "adam_v.safetensors"]

    public static func directory(out: URL) -> URL { out.appendingPathComponent(folder) }

    /// Saves `trainer`'s state under `out`, removing older checkpoints once it is in place.
    public static func save(_ trainer: Trainer, out: URL, runID: Int64?, corpusHash: String, seconds: Double) throws {
        let fm = FileManager.default
        let root = directory(out: out)
        try fm.createDirectory(at: root, withIntermediateDirectories: true)
        let name = String(format: "step-%06d", trainer.step)
        let final = root.appendingPathComponent(name)
        let staging = root.appendingPathComponent(".\(name).tmp-\(getpid())")
        try? fm.removeItem(at: staging)
        try fm.createDirectory(at: staging, withIntermediateDirectories: false)
        let copies = [trainer.model.parameters, trainer.optimizer.m, trainer.optimizer.v]
        for (file, copy) in zip(tensorFiles, copies) {
            try SafetensorsWriter.write(copy.checkpointTensors(), to: staging.appendingPathComponent(file))
        }
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
            try? fm.removeItem(at: root.appendingPathComponent(old))
        }
    }

    /// The newest complete checkpoint under `out`, if any.
    public static func latest(out: URL) -> URL? {
        let root = directory(out: out)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []
        return names.filter { $0.hasPrefix("step-") }.sorted().reversed().map { root.appendingPathComponent($0) }
            .first { FileManager.default.fileExists(atPath: $0.appendingPathComponent(stateFile).path) }
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
            let path = url.appendingPathComponent(file)
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
        trainer.optimizer.steps = adamSteps
        trainer.layerNorms = layerNorms
        trainer.step = stepsDone
    }
}
