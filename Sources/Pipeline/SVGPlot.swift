import Foundation

/// Plots as standalone SVG text (no scripts, no network), for the pipeline's report.
package enum SVGPlot {
    package struct Series: Codable, Sendable, Equatable {
        package var name: String
        package var x: [Double]
        package var y: [Double]
        package init(name: String, x: [Double], y: [Double]) {
            self.name = name
            self.x = x
            self.y = y
        }
    }

    package struct Bar: Codable, Sendable, Equatable {
        package var group: String
        package var name: String
        package var value: Double
        /// The interval drawn as an error bar (e.g. the 95% interval or the seed spread).
        package var low: Double
        package var high: Double
        package init(group: String, name: String, value: Double, low: Double, high: Double) {
            self.group = group
            self.name = name
            self.value = value
            self.low = low
            self.high = high
        }
    }

    static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"]
    static let width = 640.0, height = 360.0
    static let margin = (left: 64.0, right: 170.0, top: 36.0, bottom: 48.0)

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    static func number(_ v: Double) -> String { String(format: "%.1f", v) }

    /// About five round tick values covering lo...hi.
    package static func ticks(_ lo: Double, _ hi: Double) -> [Double] {
        guard hi > lo, lo.isFinite, hi.isFinite else { return [lo] }
        let raw = (hi - lo) / 5
        let magnitude = pow(10, (log10(raw)).rounded(.down))
        let mantissa = [1.0, 2, 2.5, 5, 10].first { $0 * magnitude >= raw } ?? 10
        let step = mantissa * magnitude
        // k * mantissa / 10^n instead of k * step, so 0.3 prints as 0.3 and not 0.30000000000000004.
        func tick(_ k: Double) -> Double { magnitude < 1 ? k * mantissa / (1 / magnitude).rounded() : k * step }
        var k = (lo / step).rounded(.up)
        var out: [Double] = []
        while tick(k) <= hi + step * 1e-9 { out.append(tick(k)); k += 1 }
        return out
    }

    static func label(_ v: Double) -> String {
        if v == v.rounded() && abs(v) < 1e6 { return String(Int(v)) }
        return abs(v) >= 0.01 ? String(format: "%.3g", v) : String(format: "%.2e", v)
    }

    static func frame(title: String, xLabel: String, yLabel: String, body: String) -> String {
        """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="sans-serif" font-size="11">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(number(width / 2 - margin.right / 2))" y="20" text-anchor="middle" font-size="13">\(escape(title))</text>
        <text x="\(number(margin.left + (width - margin.left - margin.right) / 2))" y="\(number(height - 10))" text-anchor="middle">\(escape(xLabel))</text>
        <text x="14" y="\(number(margin.top + (height - margin.top - margin.bottom) / 2))" text-anchor="middle" transform="rotate(-90 14 \(number(margin.top + (height - margin.top - margin.bottom) / 2)))">\(escape(yLabel))</text>
        \(body)</svg>
        """
    }

    /// Lines of y against x, one colour per series, with a legend on the right.
    package static func lines(title: String, xLabel: String, yLabel: String, series: [Series]) -> String {
        let xs = series.flatMap(\.x).filter(\.isFinite), ys = series.flatMap(\.y).filter(\.isFinite)
        guard let x0 = xs.min(), let x1 = xs.max(), let y0 = ys.min(), let y1 = ys.max() else {
            return frame(title: title, xLabel: xLabel, yLabel: yLabel, body: "<text x=\"200\" y=\"180\">no data</text>\n")
        }
        let (xa, xb) = x1 > x0 ? (x0, x1) : (x0 - 1, x0 + 1)
        let pad = y1 > y0 ? (y1 - y0) * 0.05 : max(abs(y0) * 0.1, 1)
        let (ya, yb) = (y0 - pad, y1 + pad)
        let plotW = width - margin.left - margin.right, plotH = height - margin.top - margin.bottom
        func px(_ x: Double) -> Double { margin.left + (x - xa) / (xb - xa) * plotW }
        func py(_ y: Double) -> Double { margin.top + (1 - (y - ya) / (yb - ya)) * plotH }
        var body = axes(xTicks: ticks(xa, xb).map { ($0, px($0)) }, yTicks: ticks(ya, yb).map { ($0, py($0)) })
        for (i, s) in series.enumerated() {
            let colour = palette[i % palette.count]
            let points = zip(s.x, s.y).filter { $0.0.isFinite && $0.1.isFinite }.map { "\(number(px($0.0))),\(number(py($0.1)))" }
            if points.count > 1 {
                body += "<polyline fill=\"none\" stroke=\"\(colour)\" stroke-width=\"1.8\" points=\"\(points.joined(separator: " "))\"/>\n"
            }
            for p in points { body += "<circle cx=\"\(p.split(separator: ",")[0])\" cy=\"\(p.split(separator: ",")[1])\" r=\"2.2\" fill=\"\(colour)\"/>\n" }
            body += legend(i, s.name, colour)
        }
        return frame(title: title, xLabel: xLabel, yLabel: yLabel, body: body)
    }

    /// Grouped bars with error bars (e.g. accuracy by scheme, one bar per method).
    package static func bars(title: String, yLabel: String, bars: [Bar]) -> String {
        var groups: [String] = [], names: [String] = []
        for b in bars {
            if !groups.contains(b.group) { groups.append(b.group) }
            if !names.contains(b.name) { names.append(b.name) }
        }
        let top = max(bars.map { max($0.high, $0.value) }.filter(\.isFinite).max() ?? 1, 1e-9) * 1.05
        let plotW = width - margin.left - margin.right, plotH = height - margin.top - margin.bottom
        func py(_ y: Double) -> Double { margin.top + (1 - y / top) * plotH }
        let groupW = plotW / Double(max(groups.count, 1)), barW = groupW * 0.8 / Double(max(names.count, 1))
        var body = axes(xTicks: [], yTicks: ticks(0, top).map { ($0, py($0)) })
        for (g, group) in groups.enumerated() {
            let gx = margin.left + Double(g) * groupW
            body += "<text x=\"\(number(gx + groupW / 2))\" y=\"\(number(height - margin.bottom + 16))\" text-anchor=\"middle\">\(escape(group))</text>\n"
            for (n, name) in names.enumerated() {
                guard let b = bars.first(where: { $0.group == group && $0.name == name }), b.value.isFinite else { continue }
                let x = gx + groupW * 0.1 + Double(n) * barW, colour = palette[n % palette.count]
                body += "<rect x=\"\(number(x))\" y=\"\(number(py(b.value)))\" width=\"\(number(barW * 0.9))\" height=\"\(number(py(0) - py(b.value)))\" fill=\"\(colour)\"><title>\(escape("\(name) \(group): \(label(b.value)) [\(label(b.low))-\(label(b.high))]"))</title></rect>\n"
                if b.low.isFinite && b.high.isFinite {
                    let cx = x + barW * 0.45
                    body += "<path d=\"M\(number(cx)),\(number(py(b.low)))V\(number(py(b.high)))M\(number(cx - 3)),\(number(py(b.low)))h6M\(number(cx - 3)),\(number(py(b.high)))h6\" stroke=\"black\" fill=\"none\"/>\n"
                }
            }
        }
        for (n, name) in names.enumerated() { body += legend(n, name, palette[n % palette.count]) }
        return frame(title: title, xLabel: "", yLabel: yLabel, body: body)
    }

    static func axes(xTicks: [(Double, Double)], yTicks: [(Double, Double)]) -> String {
        let x0 = margin.left, x1 = width - margin.right, y0 = margin.top, y1 = height - margin.bottom
        var s = "<path d=\"M\(number(x0)),\(number(y0))V\(number(y1))H\(number(x1))\" stroke=\"black\" fill=\"none\"/>\n"
        for (v, y) in yTicks {
            s += "<path d=\"M\(number(x0 - 4)),\(number(y))H\(number(x1))\" stroke=\"#ddd\"/>\n"
            s += "<text x=\"\(number(x0 - 6))\" y=\"\(number(y + 4))\" text-anchor=\"end\">\(label(v))</text>\n"
        }
        for (v, x) in xTicks {
            s += "<path d=\"M\(number(x)),\(number(y1))v4\" stroke=\"black\"/>\n"
            s += "<text x=\"\(number(x))\" y=\"\(number(y1 + 16))\" text-anchor=\"middle\">\(label(v))</text>\n"
        }
        return s
    }

    static func legend(_ i: Int, _ name: String, _ colour: String) -> String {
        let x = width - margin.right + 12, y = margin.top + 8 + Double(i) * 16
        return "<rect x=\"\(number(x))\" y=\"\(number(y - 8))\" width=\"10\" height=\"10\" fill=\"\(colour)\"/>"
            + "<text x=\"\(number(x + 14))\" y=\"\(number(y + 1))\">\(escape(name))</text>\n"
    }
}
