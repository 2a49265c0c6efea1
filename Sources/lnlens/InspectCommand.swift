import ArgumentParser
import Foundation
import GPT2
import TensorCore

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show a model's config, LayerNorm mode, parameter count, processing and hook points.")

    @Argument(help: "Model folder or hub-cache name (default: the embedded gpt2-tiny).")
    var model: String?
    @OptionGroup var processing: ProcessingFlags
    @Flag(help: "Print JSON.") var json = false

    struct Report: Encodable {
        struct Hook: Encodable { let name: String; let shape: [String] }
        let spec: String, path: String
        let lnMode: String, lnScaleHook: String
        let config: [String: Double]
        let activationFunction: String
        let parameters: Int
        let dtypes: [String]
        let tiedUnembedding: Bool
        let weightsHash: String
        let processing: ProcessingOptions
        let tokenizer: Bool
        let blasCore: String
        let hooks: [Hook]
        enum CodingKeys: String, CodingKey {
            case spec, path, config, parameters, dtypes, processing, tokenizer, hooks
            case lnMode = "ln_mode", lnScaleHook = "ln_scale_hook", activationFunction = "activation_function"
            case tiedUnembedding = "tied_unembedding", weightsHash = "weights_hash", blasCore = "blas_core"
        }
    }

    func run() throws {
        let loaded = try LoadedModel.load(model, processing: processing.options)
        let cfg = loaded.model.config
        let dims: [HookName.Point: [String]] = [
            .ln1Scale: ["batch", "pos", "1"], .ln2Scale: ["batch", "pos", "1"], .lnFinalScale: ["batch", "pos", "1"],
            .q: ["batch", "pos", "n_heads", "d_head"], .k: ["batch", "pos", "n_heads", "d_head"],
            .v: ["batch", "pos", "n_heads", "d_head"], .z: ["batch", "pos", "n_heads", "d_head"],
            .attnScores: ["batch", "n_heads", "query_pos", "key_pos"],
            .pattern: ["batch", "n_heads", "query_pos", "key_pos"],
            .result: ["batch", "pos", "n_heads", "d_model"],
            .mlpPre: ["batch", "pos", "d_mlp"], .mlpPost: ["batch", "pos", "d_mlp"],
        ]
        let hooks = HookName.all(nLayers: cfg.nLayers).map {
            Report.Hook(name: $0.description, shape: dims[$0.point] ?? ["batch", "pos", "d_model"])
        }
        let lnScale = cfg.lnMode == .lnFree
            ? "constant sqrt(eps) = \(Float(cfg.layerNormEpsilon.squareRoot())) at every position (the exact linear map)"
            : "sqrt(var + eps) per position"
        let report = Report(
            spec: model ?? EmbeddedModels.defaultName, path: loaded.checkpoint.directory.path,
            lnMode: cfg.lnMode.rawValue, lnScaleHook: lnScale,
            config: ["n_embd": Double(cfg.dModel), "n_layer": Double(cfg.nLayers), "n_head": Double(cfg.nHeads),
                     "d_head": Double(cfg.dHead), "n_positions": Double(cfg.nCtx), "vocab_size": Double(cfg.dVocab),
                     "d_mlp": Double(cfg.dMLP), "layer_norm_epsilon": cfg.layerNormEpsilon],
            activationFunction: cfg.activationFunction,
            parameters: cfg.parameterCount, dtypes: loaded.checkpoint.dtypes.sorted(),
            tiedUnembedding: !loaded.checkpoint.hasUntiedUnembedding,
            weightsHash: try loaded.weightsHash(), processing: processing.options,
            tokenizer: loaded.tokenizer != nil, blasCore: BLASInfo.coreName, hooks: hooks)
        if json { return try printJSON(report) }
        print("model       \(report.spec)")
        print("path        \(report.path)")
        print("ln mode     \(report.lnMode)   (ln hook_scale: \(lnScale))")
        print("config      n_layer \(cfg.nLayers), n_head \(cfg.nHeads), n_embd \(cfg.dModel), d_head \(cfg.dHead), d_mlp \(cfg.dMLP), n_positions \(cfg.nCtx), vocab \(cfg.dVocab), eps \(cfg.layerNormEpsilon)")
        print("parameters  \(cfg.parameterCount.formatted())   dtypes \(report.dtypes.joined(separator: ", "))   unembedding \(report.tiedUnembedding ? "tied to wte" : "untied (lm_head.weight)")")
        print("weights     xxh64 \(report.weightsHash)")
        print("processing  \(processing.options)")
        print("tokenizer   \(report.tokenizer ? "yes" : "none in folder")")
        print("blas        OpenBLAS kernel \(report.blasCore)")
        print("hooks       \(hooks.count) hook points (shapes as TransformerLens):")
        print("  hook_embed, hook_pos_embed [batch, pos, d_model]")
        for p in HookName.Point.allCases where p.isPerLayer {
            print("  blocks.{0..\(cfg.nLayers - 1)}.\(p.rawValue) [\((dims[p] ?? ["batch", "pos", "d_model"]).joined(separator: ", "))]")
        }
        print("  ln_final.hook_scale [batch, pos, 1], ln_final.hook_normalized [batch, pos, d_model]")
    }
}
