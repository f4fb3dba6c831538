import Foundation
import Jobs

/// One measurement of `rqat bench`: with --json the tool prints it as one line, `name` plus
/// the record's fields (their coding keys are the field names docs/PERFORMANCE.md, WIRE.md and
/// SCALING.md list).
package protocol BenchRecord: Codable {
    static var name: String { get }
}

extension BenchRecord {
    /// The --json line: keys sorted; a non-finite number becomes null, as JSON has none.
    /// JSONSerialization writes it (from the record's fields as Swift numbers, strings and
    /// flags) so that numbers keep the form of the lines already recorded in the docs.
    package func jsonLine() -> String {
        // Encoding and decoding plain numbers, strings and flags cannot fail.
        let data = try! JobJSON.encoder().encode(self)
        let fields = try! JSONDecoder().decode([String: JSONScalar].self, from: data)
        var object: [String: Any] = fields.mapValues(\.value)
        object["name"] = Self.name
        return String(decoding: try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
    }
}

/// A field of a flat record, decoded back into the Swift value JSONSerialization writes as the
/// encoder wrote it (JSONSerialization's own parser turns some numbers into decimals, which
/// it then writes differently).
private enum JSONScalar: Decodable {
    case null, bool(Bool), int(Int), double(Double), string(String)

    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int.self) { self = .int(i) }
        else if let d = try? c.decode(Double.self) { self = .double(d) }
        else { self = .string(try c.decode(String.self)) }
    }

    var value: Any {
        switch self {
        case .null: return NSNull()
        case .bool(let b): return b
        case .int(let i): return i
        case .double(let d): return d
        // JobJSON writes non-finite numbers as these strings.
        case .string(let s):
            return [JobJSON.nonFinite.positive, JobJSON.nonFinite.negative, JobJSON.nonFinite.nan].contains(s) ? NSNull() : s
        }
    }
}

/// Two Codable values as one flat object: the parameters several records share (`Shared`)
/// next to a record's own fields, without nesting (the JSON lines are flat). The own fields
/// read as the record's (`record.tokensPerS`).
@dynamicMemberLookup
package struct Flattened<Shared: Codable, Own: Codable>: Codable {
    package var shared: Shared
    package var own: Own

    package init(_ shared: Shared, _ own: Own) {
        self.shared = shared
        self.own = own
    }

    package init(from decoder: Decoder) throws {
        shared = try Shared(from: decoder)
        own = try Own(from: decoder)
    }

    package func encode(to encoder: Encoder) throws {
        try shared.encode(to: encoder)
        try own.encode(to: encoder)
    }

    package subscript<T>(dynamicMember field: KeyPath<Own, T>) -> T { own[keyPath: field] }
}

extension Flattened: Equatable where Shared: Equatable, Own: Equatable {}

extension Flattened: BenchRecord where Own: BenchRecord {
    package static var name: String { Own.name }
}

/// Median, min and max of repeated measurements.
package struct Spread: Codable, Equatable, Sendable {
    package let median: Double, min: Double, max: Double

    package init(_ values: [Double]) {
        let v = values.sorted()
        median = v.count % 2 == 1 ? v[v.count / 2] : (v[v.count / 2 - 1] + v[v.count / 2]) / 2
        min = v.first!
        max = v.last!
    }
}

/// Wall seconds of `body`.
package func seconds(_ body: () -> Void) -> Double {
    let t0 = DispatchTime.now().uptimeNanoseconds
    body()
    return Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
}
