import ArgumentParser
import Foundation
import GPT2
import Support

/// `lnlens export`: a model saved again as a clean Hugging Face folder.
struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Save a model as a Hugging Face folder (config.json, model.safetensors, tokenizer) that transformers loads.",
        discussion: """
            The weights are the checkpoint's own (no processing), written with transformers' names \
            (transformer.… prefix, tied lm_head left out), F32 or, with --dtype f16, F16 matrices and \
            embeddings with F32 LayerNorm parameters and biases. The folder is built beside the target \
            and renamed into place; an existing folder is replaced only with --force.
            """)

    @Argument(help: "Model folder or hub-cache name (default: the embedded gpt2-tiny).") var model: String?
    @Option(help: "The folder to write.") var out: String
    @Option(help: ArgumentHelp("Storage precision: f32 or f16.", valueName: "dtype")) var dtype = "f32"
    @Flag(help: "Replace --out if it exists.") var force = false

    func validate() throws {
        guard CheckpointExport.Precision(rawValue: dtype) != nil else { throw ValidationError("--dtype \(dtype): use f32 or f16") }
    }

    func run() throws {
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
}
