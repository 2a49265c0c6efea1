import Analysis
import GPT2
import Jobs
import ResultsStore

/// The table `patch --decompose` and `diff` print: AtP's NMAE against activation patching, each
/// computed within the same variant of the model (all layers, raw values), per site and variant —
/// how much of AtP's error each frozen nonlinearity removes.
enum DecompositionTable {
    static let variants = Freeze.decomposition.map(\.name)

    /// One line per site and side; `nmae(site, quantity)` reads a side's stored NMAE of the
    /// quantity (`atp`, `atp@freeze=mlp`).
    static func print(sites: [String], sides: [(label: String, nmae: (String, String) -> Double?)]) {
        Swift.print("which nonlinearity breaks AtP: AtP's NMAE % against activation patching in the same variant "
                    + "(all layers, raw values; attention = patterns frozen, mlp = GELU's tangent, ln = LayerNorm scales frozen):")
        let width = max(24, (sides.map(\.label.count).max() ?? 0) + 2)
        Swift.print("  " + padded("site", 15) + padded("model", width) + variants.map { rightAligned($0, 11) }.joined())
        let order = PatchSite.allCases.map(\.rawValue)
        for site in sites.sorted(by: { (order.firstIndex(of: $0) ?? 99) < (order.firstIndex(of: $1) ?? 99) }) {
            for (i, side) in sides.enumerated() {
                let cells = variants.map { rightAligned(nmaeText(side.nmae(site, StoreName.frozen(StoreName.atp, variant: $0))), 11) }
                Swift.print("  " + padded(i == 0 ? site : "", 15) + padded(side.label, width) + cells.joined())
            }
        }
    }
}

extension PatchRunReport {
    /// The decomposition of the runs (side by side when there are several).
    static func printDecomposition(_ reports: [PatchRunReport]) {
        let sites = Set(reports.flatMap { $0.errors.keys })
        DecompositionTable.print(sites: Array(sites), sides: reports.map { r in
            ("\(r.modelName) (\(r.lnMode))", { site, quantity in r.errors[site]?[quantity]?["nmae"] ?? nil })
        })
        Swift.print("")
    }
}
