fn main() {
    let pem = std::fs::read("certs/iis@hisp-b.example.pem").unwrap();
    let der = openssl::x509::X509::from_pem(&pem)
        .unwrap()
        .to_der()
        .unwrap();
    let n = 2000;
    let t = std::time::Instant::now();
    for _ in 0..n {
        let c = openssl::x509::X509::from_der(&der).unwrap();
        std::hint::black_box(c);
    }
    println!("X509::from_der: {:?} per cert", t.elapsed() / n);
    let t = std::time::Instant::now();
    for _ in 0..n {
        let c = openssl::x509::X509::from_der(&der).unwrap();
        let k = c.public_key().unwrap();
        std::hint::black_box(k);
    }
    println!("from_der + public_key: {:?}", t.elapsed() / n);
}
