import Foundation
import GPT2
import TensorCore

/// Paths of the committed fixtures made by scripts/reference/make_models_and_fixtures.py.
enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures")
    static let repo = root.deletingLastPathComponent().deletingLastPathComponent()
    static func model(_ name: String) -> URL { root.appendingPathComponent("models/\(name)") }
    static func reference(_ file: String) -> URL { root.appendingPathComponent("reference/\(file)") }

    struct Manifest: Decodable {
        struct Batch: Decodable { let name: String; let prompts: [String]; let tokens: [[Int]] }
        let batches: [Batch]
    }
    static func manifest() throws -> Manifest {
        try JSONDecoder().decode(Manifest.self, from: Data(contentsOf: reference("manifest.json")))
    }
}

/// Largest absolute value over the finite entries.
func finiteMaxAbs(_ t: Tensor) -> Float {
    t.data.reduce(0) { $1.isFinite ? max($0, abs($1)) : $0 }
}

/// The tolerance a hook is held to: 1e-4 absolute for values of ordinary size, relative for
/// the tiny (LN-free `hook_normalized`, ~1e-6) and huge (LN-free `hook_scale`, 1e6) ones.
func tolerance(for reference: Tensor) -> Float {
    let m = finiteMaxAbs(reference)
    if m < 1e-2 { return 1e-4 * m }
    if m > 100 { return 1e-6 * m }
    return 1e-4
}
