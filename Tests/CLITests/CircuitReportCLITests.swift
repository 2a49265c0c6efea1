import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import ResultsStore
import Testing

/// `lnlens report` on two circuit runs of the test checkpoints (made as CircuitCLITests makes
/// them): the faithfulness curves carry the stored points in data coordinates recovered from the
/// axes' own ticks, the drawn circuit is laid out by layer with exactly its stored edges, and
/// overlap@k is the edge sets' own.
@Suite struct CircuitReportCLITests {
    typealias C = CLITests

    /// Circuit runs 3 and 4 (of edges runs 1 and 2), and the report of both.
    static func report(in dir: URL) throws -> (db: ResultsDatabase, html: XMLDocument, single: String) {
        let (db, _) = try CircuitCLITests.edgesDatabase(in: dir)
        let c = try C.run(["circuit", "1", "2", "--db", db, "--sizes", "0,3,10,25,40,110"])
        #expect(c.status == 0, "\(c.stderr)")
        let out = dir.appendingPathComponent("report.html").path, one = dir.appendingPathComponent("one.html").path
        for (args, file) in [(["3", "4"], out), (["3"], one)] {
            let r = try C.run(["report"] + args + ["--db", db, "--out", file])
            #expect(r.status == 0, "\(r.stderr)")
        }
        return (try ResultsDatabase.openReadOnly(path: db), try XMLDocument(xmlString: String(contentsOfFile: out, encoding: .utf8)),
                try String(contentsOfFile: one, encoding: .utf8))
    }

    static func elements(_ node: XMLNode, _ name: String) throws -> [XMLElement] {
        try node.nodes(forXPath: (node is XMLDocument ? "//" : ".//") + "*[local-name()='\(name)']").compactMap { $0 as? XMLElement }
    }

    /// An attribute by name (FoundationXML's `attribute(forName:)` misses some in a default namespace).
    static func attr(_ e: XMLElement, _ name: String) -> String? { e.attributes?.first { $0.name == name }?.stringValue }
    static func number(_ e: XMLElement, _ name: String) -> Double { attr(e, name).flatMap(Double.init) ?? .nan }
    static func title(_ e: XMLElement) -> String? { e.children?.first { $0.name == "title" }?.stringValue }
    static func text(_ e: XMLElement) -> String { (e.children ?? []).filter { $0.kind == .text }.compactMap(\.stringValue).joined() }

    static func figure(_ doc: XMLDocument, _ label: String) throws -> XMLElement {
        try #require(try elements(doc, "svg").first { attr($0, "aria-label") == label }, "no \(label) figure")
    }

    /// v = a + b·u fitted through the first and last (u, v), with the largest miss of the others.
    static func fit(_ pairs: [(u: Double, v: Double)]) -> (a: Double, b: Double, miss: Double) {
        let (p, q) = (pairs.first!, pairs.last!)
        let b = (q.v - p.v) / (q.u - p.u), a = p.v - b * p.u
        return (a, b, pairs.map { abs(a + b * $0.u - $0.v) }.max()!)
    }

    /// The stored curves in the report's order: runs as given, (method, selection) as stored.
    static func series(_ db: ResultsDatabase, runs: [Int64]) throws -> [(run: Int64, rows: [FaithfulnessRow])] {
        try runs.flatMap { run in
            let rows = try db.faithfulness(runID: run).filter { $0.normalized?.isFinite == true }
            var keys: [String] = []
            for r in rows where !keys.contains(r.method + "/" + r.selection) { keys.append(r.method + "/" + r.selection) }
            return keys.map { k in (run, rows.filter { $0.method + "/" + $0.selection == k }) }
        }
    }

    @Test func curvesCarryTheStoredPoints() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (db, html, _) = try Self.report(in: dir)
        let svg = try Self.figure(html, "faithfulness curves"), texts = try Self.elements(svg, "text")
        // x: log10(1 + edges) from the tick labels 0, 1, 10, 100 (anchored in the middle); y: linear from the
        // y-axis labels (anchored at the end).
        let xTicks = texts.filter { Self.attr($0, "text-anchor") == "middle" }.compactMap { t in
            Double(Self.text(t)).map { (u: log10(1 + $0), v: Self.number(t, "x")) } }
        let yTicks = texts.filter { Self.attr($0, "text-anchor") == "end" }.compactMap { t in
            Double(Self.text(t)).map { (u: $0, v: Self.number(t, "y")) } }
        #expect(xTicks.count == 4 && yTicks.count >= 3, "\(xTicks) \(yTicks)")
        let x = Self.fit(xTicks), y = Self.fit(yTicks)
        #expect(x.miss <= 0.02 && y.miss <= 0.02 && x.b > 0 && y.b < 0, "ticks off their scales: \(x) \(y)")
        let want = try Self.series(db, runs: [3, 4]), lines = try Self.elements(svg, "polyline")
        #expect(want.count == 4 && lines.count == want.count, "\(lines.count) curves for \(want.count) stored series")
        for (line, (run, rows)) in zip(lines, want) {
            let points = Self.attr(line, "points")!.split(separator: " ").map { $0.split(separator: ",").map { Double($0)! } }
            #expect(points.count == rows.count, "run \(run) \(rows[0].method): \(points.count) points, \(rows.count) stored")
            #expect(zip(points, points.dropFirst()).allSatisfy { $0[0] <= $1[0] }, "x not monotone")
            for (p, row) in zip(points, rows) {
                let edges = pow(10, (p[0] - x.a) / x.b) - 1, faithfulness = (p[1] - y.a) / y.b
                #expect(abs(edges - Double(row.edges)) <= 0.05, "run \(run) \(row.method) \(row.requested): x is \(edges) edges, stored \(row.edges)")
                #expect(abs(faithfulness - row.normalized!) <= 1e-3, "run \(run) \(row.method): y is \(faithfulness), stored \(row.normalized!)")
            }
            let stroke = Self.attr(line, "stroke")
            let dots = try Self.elements(svg, "circle").filter { Self.attr($0, "fill") == stroke }
            #expect(dots.count == rows.count, "run \(run) \(rows[0].method): \(dots.count) markers")
        }
        #expect(Set(lines.compactMap { Self.attr($0, "stroke") }).count == lines.count, "two curves share a colour")
        let legend = texts.map(Self.text).filter { $0.contains(" · run ") }
        #expect(legend.count == want.count && zip(legend, want).allSatisfy { l, w in
            l.hasSuffix(" · \(w.rows[0].method) · \(w.rows[0].selection) · run \(w.run)") }, "legend \(legend)")
    }

    /// The circuit drawn for run 3: its first series' largest circuit of at most 40 edges; input at
    /// the bottom, per layer the heads then the MLP above them, the logits at the top; one line per
    /// stored edge from its upstream node to its downstream node (q, k, v entering left, middle,
    /// right), width 0.6 + 4 |score| / max |score|, blue when positive; exactly the edges' nodes
    /// drawn as used.
    @Test func graphDrawsTheStoredCircuitByLayer() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (db, html, _) = try Self.report(in: dir)
        let groups = try Self.elements(try Self.figure(html, "circuits as layered graphs"), "g")
        let group = try #require(try groups.first { g in try Self.elements(g, "text").contains {
            Self.text($0).components(separatedBy: " · ").contains("run 3") } })
        let heading = try #require(try Self.elements(group, "text").map(Self.text).first { $0.hasPrefix("Circuit: ") })
        let first = try Self.series(db, runs: [3])[0].rows
        let largest = first.filter { $0.edges > 0 && $0.edges <= 40 }.map(\.edges).max()!
        let point = try #require(first.first { heading == "Circuit: \($0.method) \($0.selection) \(Int($0.requested)) (\($0.edges) edges)" },
                                 "\(heading)")
        #expect(point.edges == largest)
        var center: [String: (x: Double, y: Double)] = [:]
        var used: Set<String> = []
        for r in try Self.elements(group, "rect") {
            guard let name = Self.title(r) else { continue }
            center[name] = (Self.number(r, "x") + Self.number(r, "width") / 2, Self.number(r, "y") + Self.number(r, "height") / 2)
            if Self.attr(r, "stroke") == "#222222" { used.insert(name) }
        }
        let layers = [["input"]] + (0..<2).flatMap { l in [(0..<4).map { "a\(l).h\($0)" }, ["m\(l)"]] } + [["logits"]]
        #expect(Set(center.keys) == Set(layers.joined()), "\(center.keys.sorted())")
        for (below, above) in zip(layers, layers.dropFirst()) {
            #expect(below.allSatisfy { b in above.allSatisfy { center[b]!.y > center[$0]!.y } }, "\(below) not below \(above)")
        }
        for row in layers where row.count > 1 {
            #expect(zip(row, row.dropFirst()).allSatisfy { center[$0]!.x < center[$1]!.x && center[$0]!.y == center[$1]!.y })
        }
        let stored = try db.circuitEdges(runID: 3)
            .filter { $0.method == point.method && $0.selection == point.selection && $0.requested == point.requested }
        #expect(stored.count == point.edges)
        #expect(used == Set(stored.flatMap { [$0.upstream, $0.downstream] }), "nodes drawn as used: \(used.sorted())")
        let lines = try Self.elements(group, "line").filter { Self.title($0)?.contains(": mean score ") == true }
        let byName = Dictionary(uniqueKeysWithValues: lines.map { (String(Self.title($0)!.split(separator: ":")[0]), $0) })
        #expect(lines.count == stored.count && Set(byName.keys) == Set(stored.map(\.edge)))
        let most = stored.map { abs($0.score) }.max()!
        for e in stored {
            guard let line = byName[e.edge], let up = center[e.upstream], let down = center[e.downstream] else { continue }
            let side = Self.number(line, "x2") - down.x
            #expect(Self.number(line, "x1") == up.x && Self.number(line, "y1") == up.y - 9 && Self.number(line, "y2") == down.y + 9, "\(e.edge)")
            #expect(e.input == "q" ? side < 0 : e.input == "v" ? side > 0 : abs(side) < 0.01, "\(e.edge) enters at \(side)")
            #expect(abs(Self.number(line, "stroke-width") - (0.6 + 4 * abs(e.score) / most)) <= 0.01, "\(e.edge) width")
            #expect(Self.attr(line, "stroke") == (e.score >= 0 ? "#2166ac" : "#b2182b"))
        }
        let widths = stored.sorted { abs($0.score) < abs($1.score) }.map { Self.number(byName[$0.edge]!, "stroke-width") }
        #expect(zip(widths, widths.dropFirst()).allSatisfy { $0 <= $1 } && widths.first! < widths.last!, "\(widths)")
    }

    /// With two runs the report shows overlap@k of each size both hold, computed here from the
    /// stored edge sets; with one run it shows none.
    @Test func overlapOfTwoRunsIsTheStoredEdgeSets() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (db, html, single) = try Self.report(in: dir)
        let table = try #require(try Self.elements(html, "table").first { t in try Self.elements(t, "th").map(Self.text).last == "overlap" })
        let rows = try Self.elements(table, "tr").dropFirst().map { try Self.elements($0, "td").map(Self.text) }
        let a = try db.faithfulness(runID: 3), b = try db.faithfulness(runID: 4)
        let edgesA = try db.circuitEdges(runID: 3), edgesB = try db.circuitEdges(runID: 4)
        let shared = a.filter { x in b.contains { $0.method == x.method && $0.selection == x.selection && $0.requested == x.requested } }
        #expect(rows.count == shared.count && shared.count == 12, "\(rows)")
        for (row, c) in zip(rows, shared) {
            func set(_ e: [CircuitEdgeRow]) -> Set<String> {
                Set(e.filter { $0.method == c.method && $0.selection == c.selection && $0.requested == c.requested }.map(\.edge))
            }
            let (x, y) = (set(edgesA), set(edgesB)), both = x.intersection(y).count, most = max(x.count, y.count)
            let want = [c.method, c.selection, "\(Int(c.requested))", "\(x.count)", "\(y.count)", "\(both)",
                        String(format: "%.3f", most == 0 ? 0 : Double(both) / Double(most))]
            #expect(row == want)
        }
        #expect(rows.contains { Double($0[6])! > 0 && Double($0[6])! < 1 }, "no partial overlap to check: \(rows)")
        #expect(single.contains("Circuits and faithfulness") && !single.contains("overlap@k"))
    }
}
