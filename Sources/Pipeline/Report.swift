import Eval
import Foundation
import Jobs

/// What the pipeline measured of one model (`eval-<model>/evaluation.json`).
package struct ModelEvaluation: Codable, Sendable, Equatable {
    package var name: String
    package var path: String
    /// fp, rtn, gptq, or "<init>+<kd|sft>".
    package var method: String
    package var scheme: String?
    package var accuracy: AccuracySummary?
    /// With sampling (the paper's setting), when the main figures are greedy and the config asks.
    package var sampledAccuracy: AccuracySummary?
    /// Mean forward KL(teacher || model) per completion token of the held-out traces.
    package var heldoutKL: Double?
    /// Share of (problem, seed) pairs with the teacher's final answer, right or wrong
    /// (`AccuracyEval.agreement`); filled in by the report from the outcomes files.
    package var agreement: Double?
    package var perplexity: Double?
    package var bitsPerWeight: Double?
    package var sizeBytes: Int?

    package init(name: String, path: String, method: String, scheme: String?) {
        self.name = name
        self.path = path
        self.method = method
        self.scheme = scheme
    }

    enum CodingKeys: String, CodingKey {
        case name, path, method, scheme, accuracy, perplexity, agreement
        case sampledAccuracy = "sampled_accuracy", heldoutKL = "heldout_kl"
        case bitsPerWeight = "bits_per_weight", sizeBytes = "size_bytes"
    }
}

/// "a beats b": the paired-bootstrap interval of the per-problem difference (of greedy
/// correctness, or with `sampled` of the mean correctness over the sampling seeds).
package struct Comparison: Codable, Sendable, Equatable {
    package var a: String
    package var b: String
    package var difference: Interval
    package var beats: Bool
    package var sampled: Bool?
}

/// An RL run's per-step records (`rl-metrics.jsonl`), and its stop if it stopped.
package struct RLCurve: Codable, Sendable, Equatable {
    package var run: String
    package var from: String
    package var steps: [RLStepRecord]
    package var startReward: Double?
    /// The stop's message when the cold-start gate refused the start or the on-policy check or
    /// the collapse guard stopped the run, and which of them (`stoppedBy`).
    package var stopped: String?
    package var stoppedBy: String?

    enum CodingKeys: String, CodingKey {
        case run, from, steps, stopped
        case startReward = "start_reward", stoppedBy = "stopped_by"
    }
}

/// How much of the gap between a PTQ init and the teacher a QAT run closed.
package struct GapClosed: Codable, Sendable, Equatable {
    package var run: String
    package var baseline: String
    /// Teacher minus baseline accuracy, in points (0-100).
    package var gapPoints: Double
    /// (run - baseline) / (teacher - baseline); nil when the gap is under 10 points (too small to judge).
    package var fraction: Double?

    enum CodingKeys: String, CodingKey {
        case run, baseline, fraction
        case gapPoints = "gap_points"
    }
}

/// Steps a curve needs to reach 90% of the teacher's accuracy (nil: not reached).
package struct StepsToTarget: Codable, Sendable, Equatable {
    package var run: String
    package var target: Double
    package var steps: Int?
}

/// The pipeline's result: `report.json`, rendered as `report.md` and `report.html`.
package struct PipelineReport: Codable, Sendable {
    package var task: String
    package var models: [ModelEvaluation]
    package var curves: [QATCurve]
    package var rlCurves: [RLCurve]
    package var comparisons: [Comparison]
    package var gaps: [GapClosed]
    package var stepsToTarget: [StepsToTarget]
    package var stagesRun: [String]
    package var stagesSkipped: [String]
    package var seconds: Double

    enum CodingKeys: String, CodingKey {
        case task, models, curves, comparisons, gaps, seconds
        case rlCurves = "rl_curves"
        case stepsToTarget = "steps_to_target", stagesRun = "stages_run", stagesSkipped = "stages_skipped"
    }

    static func build(config: PipelineConfig, root: URL, evaluations: [ModelEvaluation],
                      qatRuns: [(name: String, dir: URL, from: String, objective: String)],
                      rlRuns: [(name: String, dir: URL, from: String)] = [],
                      stagesRun: [String], stagesSkipped: [String], seconds: Double) throws -> PipelineReport {
        let curves = qatRuns.compactMap { try? JobJSON.read(QATCurve.self, from: $0.dir.appendingPathComponent("curve.json"), missing: "") }
        // Each model's outcomes, read once (comparisons and agreement all use them).
        var outcomes: [String: [ProblemOutcome]] = [:]
        for e in evaluations {
            let url = root.appendingPathComponent("eval-\(e.name)/outcomes.jsonl")
            outcomes[e.name] = ((try? PipelineRun.readLines(url)) ?? []).compactMap { try? JSONDecoder().decode(ProblemOutcome.self, from: $0) }
        }
        var sampledOutcomes: [String: [ProblemOutcome]] = [:]
        for e in evaluations where e.sampledAccuracy != nil {
            let url = root.appendingPathComponent("eval-\(e.name)/outcomes-sampled.jsonl")
            sampledOutcomes[e.name] = ((try? PipelineRun.readLines(url)) ?? []).compactMap { try? JSONDecoder().decode(ProblemOutcome.self, from: $0) }
        }
        func perProblem(_ name: String, sampled: Bool = false) -> [String: Double] {
            AccuracyEval.perProblem((sampled ? sampledOutcomes : outcomes)[name] ?? [], strict: false)
        }
        var evaluations = evaluations
        for i in evaluations.indices {
            evaluations[i].agreement = AccuracyEval.agreement(outcomes[evaluations[i].name] ?? [], with: outcomes["teacher"] ?? [])
        }
        func accuracy(_ name: String) -> Double? { evaluations.first { $0.name == name }?.accuracy?.flexible.mean }

        // Paired comparisons the findings rest on: KD against SFT from the same init, and every
        // QAT run against its init.
        var comparisons: [Comparison] = []
        func compare(_ a: String, _ b: String, sampled: Bool = false) {
            let pa = perProblem(a, sampled: sampled), pb = perProblem(b, sampled: sampled)
            let ids = pa.keys.filter { pb[$0] != nil }.sorted()
            guard !ids.isEmpty else { return }
            let d = Bootstrap.pairedDifference(ids.map { pa[$0]! }, ids.map { pb[$0]! })
            comparisons.append(Comparison(a: a, b: b, difference: d, beats: d.excludesZero && d.mean > 0, sampled: sampled ? true : nil))
        }
        for run in qatRuns where run.objective.hasPrefix("kd") {
            if qatRuns.contains(where: { $0.from == run.from && $0.objective == "sft" }) { compare(run.name, "\(run.from)+sft") }
        }
        for run in qatRuns { compare(run.name, run.from) }
        // RL against its start, greedy and with sampling (the setting RL rollouts train in).
        for run in rlRuns where outcomes[run.name] != nil {
            compare(run.name, run.from)
            compare(run.name, run.from, sampled: true)
        }
        let rlCurves = rlRuns.map { run -> RLCurve in
            let steps = ((try? PipelineRun.readLines(run.dir.appendingPathComponent("rl-metrics.jsonl"))) ?? [])
                .compactMap { try? JobJSON.decoder().decode(RLStepRecord.self, from: $0) }
            let summary = try? JobJSON.read(RLSummary.self, from: run.dir.appendingPathComponent("rl-summary.json"), missing: "")
            let stop = RLRun.Stop.read(in: run.dir)
            return RLCurve(run: run.name, from: run.from, steps: steps, startReward: summary?.startReward ?? stop?.startReward,
                           stopped: stop?.stopped, stoppedBy: stop?.by.rawValue)
        }

        var gaps: [GapClosed] = []
        if let teacher = accuracy("teacher") {
            for run in qatRuns {
                guard let base = accuracy(run.from), let mine = accuracy(run.name) else { continue }
                let gap = 100 * (teacher - base)
                gaps.append(GapClosed(run: run.name, baseline: run.from, gapPoints: gap,
                                      fraction: gap >= 10 ? (mine - base) / (teacher - base) : nil))
            }
        }
        var steps: [StepsToTarget] = []
        if let teacher = accuracy("teacher") {
            for c in curves where c.points.contains(where: { $0.accuracy != nil }) {
                let target = 0.9 * teacher
                steps.append(StepsToTarget(run: c.run, target: target,
                                           steps: c.points.first { ($0.accuracy ?? -1) >= target }?.step))
            }
        }
        return PipelineReport(task: config.task.testTask ?? config.task.name, models: evaluations, curves: curves,
                              rlCurves: rlCurves, comparisons: comparisons, gaps: gaps, stepsToTarget: steps,
                              stagesRun: stagesRun, stagesSkipped: stagesSkipped, seconds: seconds)
    }

    // MARK: - Rendering

    static func percent(_ v: Double?) -> String { v.map { String(format: "%.1f", 100 * $0) } ?? "-" }

    static func accuracyCell(_ f: AccuracyFigure?) -> String {
        guard let f else { return "-" }
        var cell = "\(percent(f.mean)) [\(percent(f.low))-\(percent(f.high))]"
        if f.perSeed.count > 1 { cell += " (seeds \(percent(f.seedMin))-\(percent(f.seedMax)))" }
        return cell
    }

    /// The results table as markdown rows.
    package var tableLines: [String] {
        var lines = ["| model | scheme | bits/weight | size MB | accuracy strict % [95%] | accuracy flexible % [95%] | same answer as teacher % | held-out KL | perplexity (completions) |",
                     "|---|---|---|---|---|---|---|---|---|"]
        for m in models {
            lines.append("| \(m.name) | \(m.scheme ?? "fp32") | \(m.bitsPerWeight.map { String(format: "%.2f", $0) } ?? "-") | "
                + "\(m.sizeBytes.map { String(format: "%.2f", Double($0) / 1e6) } ?? "-") | \(Self.accuracyCell(m.accuracy?.strict)) | "
                + "\(Self.accuracyCell(m.accuracy?.flexible)) | \(Self.percent(m.agreement)) | \(m.heldoutKL.map { String(format: "%.4f", $0) } ?? "-") | "
                + "\(m.perplexity.map { String(format: "%.3f", $0) } ?? "-") |")
        }
        if models.contains(where: { $0.sampledAccuracy != nil }) {
            lines += ["", "With sampling (temperature, top-p and seeds as configured; mean over seeds):", "",
                      "| model | accuracy strict % [95%] | accuracy flexible % [95%] |", "|---|---|---|"]
            for m in models where m.sampledAccuracy != nil {
                lines.append("| \(m.name) | \(Self.accuracyCell(m.sampledAccuracy?.strict)) | \(Self.accuracyCell(m.sampledAccuracy?.flexible)) |")
            }
        }
        return lines
    }

    package var findingLines: [String] {
        var lines: [String] = []
        for c in comparisons {
            lines.append(String(format: "- %@ vs %@: %+.1f points [%+.1f, %+.1f] (paired bootstrap, flexible%@): %@", c.a, c.b,
                                100 * c.difference.mean, 100 * c.difference.low, 100 * c.difference.high,
                                c.sampled == true ? ", sampled" : "",
                                c.beats ? "\(c.a) beats \(c.b)" : (c.difference.excludesZero ? "\(c.b) beats \(c.a)" : "no significant difference")))
        }
        for g in gaps {
            lines.append(g.fraction.map { String(format: "- %@ closes %.0f%% of the %.1f-point gap between %@ and the teacher", g.run, 100 * $0, g.gapPoints, g.baseline) }
                ?? String(format: "- %@: the gap between %@ and the teacher is %.1f points, too small to judge", g.run, g.baseline, g.gapPoints))
        }
        for c in rlCurves {
            if let stopped = c.stopped {
                lines.append("- \(c.run): stopped by the \(c.stoppedBy ?? "cold-start gate")"
                             + (c.steps.isEmpty ? "" : " after \(c.steps.count) RL steps from \(c.from) (no model evaluated)") + ": \(stopped)")
            } else if let first = c.steps.first, let last = c.steps.last {
                lines.append(String(format: "- %@: %d RL steps from %@, probe reward %@ at the start; batch reward %.3f -> %.3f, entropy %.3f -> %.3f, length %.1f -> %.1f; zero-advantage groups %d of %d over the run",
                                    c.run, c.steps.count, c.from, c.startReward.map { String(format: "%.3f", $0) } ?? "-",
                                    first.rollouts.meanReward, last.rollouts.meanReward, first.entropy, last.entropy,
                                    first.rollouts.meanLength, last.rollouts.meanLength,
                                    c.steps.reduce(0) { $0 + $1.rollouts.zeroAdvantageGroups }, c.steps.reduce(0) { $0 + $1.rollouts.groups }))
            }
        }
        for s in stepsToTarget {
            lines.append("- \(s.run) reaches 90% of the teacher's accuracy (\(Self.percent(s.target))%) " + (s.steps.map { "at step \($0)" } ?? "at no saved step"))
        }
        return lines
    }

    var plots: [(title: String, svg: String)] {
        var out: [(String, String)] = []
        let withLoss = curves.filter { !$0.loss.isEmpty }
        if !withLoss.isEmpty {
            out.append(("Training loss", SVGPlot.lines(title: "QAT training loss", xLabel: "step", yLabel: "loss",
                                                       series: withLoss.map { .init(name: $0.run, x: $0.loss.map { $0[0] }, y: $0.loss.map { $0[1] }) })))
        }
        let withKL = curves.filter { $0.points.contains { $0.heldoutKL != nil } }
        if !withKL.isEmpty {
            out.append(("Held-out KL", SVGPlot.lines(title: "Held-out KL to the teacher", xLabel: "step", yLabel: "KL (nats/token)",
                                                     series: withKL.map { c in .init(name: c.run, x: c.points.map { Double($0.step) }, y: c.points.map { $0.heldoutKL ?? .nan }) })))
        }
        let withAccuracy = curves.filter { $0.points.contains { $0.accuracy != nil } }
        if !withAccuracy.isEmpty {
            out.append(("Accuracy against step", SVGPlot.lines(title: "Validation accuracy against step (greedy)", xLabel: "step", yLabel: "accuracy %",
                                                               series: withAccuracy.map { c in .init(name: c.run, x: c.points.map { Double($0.step) }, y: c.points.map { 100 * ($0.accuracy ?? .nan) }) })))
        }
        let ran = rlCurves.filter { !$0.steps.isEmpty }
        if !ran.isEmpty {
            func plot(_ title: String, _ y: String, _ value: (RLStepRecord) -> Double) -> String {
                SVGPlot.lines(title: title, xLabel: "RL step", yLabel: y,
                              series: ran.map { c in .init(name: c.run, x: c.steps.map { Double($0.step) }, y: c.steps.map(value)) })
            }
            out.append(("RL reward", plot("RL: mean reward of the rollout batch", "reward", { $0.rollouts.meanReward })))
            out.append(("RL entropy", plot("RL: mean token entropy at the sampling temperature", "nats", { $0.entropy })))
            out.append(("RL length", plot("RL: mean completion length", "tokens", { $0.rollouts.meanLength })))
        }
        let bars = models.compactMap { m -> SVGPlot.Bar? in
            guard let f = m.accuracy?.flexible else { return nil }
            return SVGPlot.Bar(group: m.scheme ?? "fp32", name: m.method, value: 100 * f.mean, low: 100 * f.low, high: 100 * f.high)
        }
        if !bars.isEmpty {
            out.append(("Accuracy by method and scheme", SVGPlot.bars(title: "Test accuracy (flexible) by method and scheme, 95% interval", yLabel: "accuracy %", bars: bars)))
        }
        return out
    }

    var markdown: String {
        var lines = ["# rqat pipeline report: \(task)", "", "## Results", ""] + tableLines
        lines += ["", "## Findings", ""] + (findingLines.isEmpty ? ["- (no comparisons configured)"] : findingLines)
        lines += ["", "## Plots", ""]
        for (i, p) in plots.enumerated() { lines.append("![\(p.title)](plot-\(i + 1).svg)") }
        lines += ["", "Stages run: \(stagesRun.joined(separator: ", ")); skipped as unchanged: \(stagesSkipped.isEmpty ? "none" : stagesSkipped.joined(separator: ", ")). "
                  + "Total time \(formatDuration(seconds)).", ""]
        return lines.joined(separator: "\n")
    }

    var html: String {
        func escape(_ s: String) -> String { SVGPlot.escape(s) }
        var body = "<h1>rqat pipeline report: \(escape(task))</h1>\n<h2>Results</h2>\n<table>\n"
        for (i, line) in tableLines.enumerated() where line.hasPrefix("|") && !line.hasPrefix("|---") {
            let cells = line.split(separator: "|", omittingEmptySubsequences: false).dropFirst().dropLast()
            let tag = i == 0 ? "th" : "td"
            body += "<tr>" + cells.map { "<\(tag)>\(escape($0.trimmingCharacters(in: .whitespaces)))</\(tag)>" }.joined() + "</tr>\n"
        }
        body += "</table>\n<h2>Findings</h2>\n<ul>\n" + findingLines.map { "<li>\(escape(String($0.dropFirst(2))))</li>\n" }.joined() + "</ul>\n<h2>Plots</h2>\n"
        for p in plots { body += "<figure>\(p.svg)<figcaption>\(escape(p.title))</figcaption></figure>\n" }
        body += "<p>Total time \(formatDuration(seconds)).</p>\n"
        return """
            <!DOCTYPE html>
            <html><head><meta charset="utf-8"><title>rqat report: \(escape(task))</title>
            <style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}figure{margin:1em 0}</style>
            </head><body>
            \(body)</body></html>
            """
    }

    func write(to root: URL) throws {
        try JobJSON.write(self, to: root.appendingPathComponent("report.json"))
        for (i, p) in plots.enumerated() { try JobJSON.writeData(Data(p.svg.utf8), to: root.appendingPathComponent("plot-\(i + 1).svg")) }
        try JobJSON.writeData(Data(markdown.utf8), to: root.appendingPathComponent("report.md"))
        try JobJSON.writeData(Data(html.utf8), to: root.appendingPathComponent("report.html"))
    }
}
