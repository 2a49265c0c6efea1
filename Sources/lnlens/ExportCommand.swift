import ArgumentParser
import Foundation
import GPT2
import Support
import Training

/// `lnlens export`: a model saved again as a clean Hugging Face folder.
struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Save a model as a Hugging Face folder (config.json, model.safetensors, tokenizer) that transformers loads.",
        discussion: """
            The weights are the checkpoint's own (no processing), written with transformers' names \
            (transformer.… prefix, tied lm_head left out), F32 or, with --dtype f16, F16 matrices and \
            embeddings with F32 LayerNorm parameters and biases. The folder is built beside the target \
            and renamed into place; an existing folder is replaced only with --force. With --step N, \
            MODEL is the --out folder of a train or remove-ln run and the checkpoint of step N kept \
            there (--save-every N --keep-all) is written as the run's own export writes its model: \
            in the LN-free encoding once every LayerNorm is removed.
            """)

    @Argument(help: "Model folder or hub-cache name (default: the embedded gpt2-tiny); with --step, a training's --out folder.")
    var model: String?
    @Option(help: "Export the checkpoint of this step (steps done) kept in the training folder MODEL.") var step: Int?
    @Option(help: "The folder to write.") var out: String
    @Option(help: ArgumentHelp("Storage precision: f32 or f16.", valueName: "dtype")) var dtype = "f32"
    @Flag(help: "Replace --out if it exists.") var force = false

    func validate() throws {
        guard CheckpointExport.Precision(rawValue: dtype) != nil else { throw ValidationError("--dtype \(dtype): use f32 or f16") }
        if let step {
            if step < 0 { throw ValidationError("--step must be 0 or more") }
            if model == nil { throw ValidationError("--step \(step) exports a kept checkpoint: give the training's --out folder as MODEL") }
        }
    }

    func run() throws {
        if let step, let model { return try exportStep(step, run: model) }
        let loaded = try LoadedModel.load(model, processing: .none)
        let target = URL(fileURLWithPath: out).standardizedFileURL
        var inputs = [loaded.checkpoint.directory.path] + loaded.inputFiles
        if let tokenizer = loaded.checkpoint.tokenizerDirectory { inputs.append(tokenizer.path) }
        do {
            try Files.checkOutputFolder(out, option: "--out", inputs: inputs, force: force)
        } catch { throw CLIError.io(error.description) }
        try loaded.model.save(to: target, tokenizerFrom: loaded.checkpoint.tokenizerDirectory,
                              precision: CheckpointExport.Precision(rawValue: dtype)!,
                              metadata: ["lnlens_version": LNLensVersion.string, "source": loaded.checkpoint.directory.path],
                              force: force)
        print("wrote \(out) (\(loaded.model.config.lnMode.rawValue), \(dtype))")
    }

    /// `--step N`: the checkpoint of step N kept under the training folder `run`.
    func exportStep(_ step: Int, run: String) throws {
        let runURL = URL(fileURLWithPath: run).standardizedFileURL
        let checkpoint = TrainingCheckpoint.directory(out: runURL).path
        do {
            try Files.checkOutputFolder(out, option: "--out", inputs: [checkpoint], force: force)
        } catch { throw CLIError.io(error.description) }
        let metadata = ["lnlens_version": LNLensVersion.string, "source": runURL.path, "lnlens_checkpoint_step": "\(step)"]
        let state = try TrainingCheckpoint.exportStep(step, run: runURL, to: URL(fileURLWithPath: out).standardizedFileURL,
                                                      precision: CheckpointExport.Precision(rawValue: dtype)!, force: force,
                                                      metadata: metadata)
        let mode = state.layerNorms.map { $0.keepLN ? "layernorm, --keep-ln" : "ln-free" } ?? "layernorm"
        print("wrote \(out) (step \(step) of \(run), \(mode), \(dtype))")
    }
}
