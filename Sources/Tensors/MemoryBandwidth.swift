import Foundation

/// Measures this machine's memory bandwidth with all threads, the ceiling for any kernel that
/// streams weights (decode reads every weight once per step).
package enum MemoryBandwidth {
    /// Bytes per second: `copy` counts bytes read plus bytes written (as STREAM does); `read`
    /// counts bytes summed. Keeps its buffers (already paged in) so it can measure again and
    /// again, e.g. between the runs of a benchmark it is compared with.
    package final class Meter {
        let n: Int
        let src: Tensor, dst: Tensor

        package init(bytes: Int) {
            n = bytes / 4
            src = Tensor(shape: [n])
            dst = Tensor(shape: [n])
            for i in stride(from: 0, to: n, by: 1024) { src.ptr[i] = Float(i) }
            (dst.ptr).update(from: src.ptr, count: n)   // page both buffers in
        }

        /// Bytes per second, the best of `repeats` copies and of `repeats` sums.
        package func measure(repeats: Int) -> (copy: Double, read: Double) {
            let n = self.n, src = self.src, dst = self.dst
            var bestCopy = Double.infinity, bestRead = Double.infinity
            var sink: Float = 0
            let sums = UnsafeMutablePointer<Float>.allocate(capacity: Threads.count)
            defer { sums.deallocate() }
            for _ in 0..<max(1, repeats) {
                let t0 = DispatchTime.now().uptimeNanoseconds
                Threads.parallelFor(Threads.count) { parts in
                    for p in parts {
                        let lo = n * p / Threads.count, hi = n * (p + 1) / Threads.count
                        (dst.ptr + lo).update(from: src.ptr + lo, count: hi - lo)
                    }
                }
                let t1 = DispatchTime.now().uptimeNanoseconds
                Threads.parallelFor(Threads.count) { parts in
                    for p in parts {
                        let lo = n * p / Threads.count, hi = n * (p + 1) / Threads.count
                        var acc = SIMD16<Float>()
                        var i = lo
                        let base = UnsafeRawPointer(src.ptr)
                        while i + 16 <= hi {
                            acc += base.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
                            i += 16
                        }
                        sums[p] = acc.sum()
                    }
                }
                let t2 = DispatchTime.now().uptimeNanoseconds
                for p in 0..<Threads.count { sink += sums[p] }
                bestCopy = min(bestCopy, Double(t1 - t0))
                bestRead = min(bestRead, Double(t2 - t1))
            }
            if sink.isNaN { print("") }  // keeps the read loop from being optimised away
            return (2 * Double(n * 4) / (bestCopy / 1e9), Double(n * 4) / (bestRead / 1e9))
        }
    }
}
