//! The one FFI module: the parts of OpenSSL's CMS API that the `openssl` crate does not wrap.
//!
//! Why this exists: `openssl::cms` offers only whole-message `CMS_sign`/`CMS_encrypt`/
//! `CMS_verify`/`CMS_decrypt`. Direct needs more control than that:
//! - choosing the signature digest (SHA-256/384/512) and adding the signer's chain;
//! - choosing RSA-OAEP (SHA-1 or SHA-256) or PKCS#1 v1.5 key transport per recipient;
//! - verifying each SignerInfo on its own ("one valid signer bound to the sender suffices"), where
//!   `CMS_verify` fails the whole message when any signer fails;
//! - reading the algorithms a peer used, so that MD5/SHA-1 signatures can be refused.
//!
//! OpenSSL stays the CMS engine (it reads the indefinite-length BER that OpenSSL and BouncyCastle
//! peers send); this module only reaches the functions it already exports. Every `unsafe` block
//! states the invariant it relies on. Everything else in the crate is safe code.
#![allow(unsafe_code)]
#![allow(non_camel_case_types)]

use std::ffi::{c_int, c_uint, c_void};
use std::ptr;

use foreign_types::{ForeignType, ForeignTypeRef};
use openssl::cms::CmsContentInfoRef;
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKeyRef, Private};
use openssl::pkey_ctx::PkeyCtxRef;
use openssl::rsa::Padding;
use openssl::stack::Stack;
use openssl::symm::Cipher;
use openssl::x509::{X509, X509Ref};
use openssl_sys as sys;

use crate::mime::build::Base64Lines;

#[repr(C)]
pub struct CMS_SignerInfo {
    _private: [u8; 0],
}
#[repr(C)]
pub struct CMS_RecipientInfo {
    _private: [u8; 0],
}

unsafe extern "C" {
    fn CMS_add1_signer(
        cms: *mut sys::CMS_ContentInfo,
        signer: *mut sys::X509,
        pk: *mut sys::EVP_PKEY,
        md: *const sys::EVP_MD,
        flags: c_uint,
    ) -> *mut CMS_SignerInfo;
    fn CMS_add1_cert(cms: *mut sys::CMS_ContentInfo, cert: *mut sys::X509) -> c_int;
    fn CMS_final(
        cms: *mut sys::CMS_ContentInfo,
        data: *mut sys::BIO,
        dcont: *mut sys::BIO,
        flags: c_uint,
    ) -> c_int;
    fn CMS_add1_recipient_cert(
        cms: *mut sys::CMS_ContentInfo,
        recip: *mut sys::X509,
        flags: c_uint,
    ) -> *mut CMS_RecipientInfo;
    fn CMS_RecipientInfo_get0_pkey_ctx(ri: *mut CMS_RecipientInfo) -> *mut sys::EVP_PKEY_CTX;
    fn CMS_get0_RecipientInfos(cms: *mut sys::CMS_ContentInfo) -> *mut sys::OPENSSL_STACK;
    fn CMS_RecipientInfo_type(ri: *mut CMS_RecipientInfo) -> c_int;
    fn CMS_RecipientInfo_ktri_cert_cmp(ri: *mut CMS_RecipientInfo, cert: *mut sys::X509) -> c_int;
    fn CMS_RecipientInfo_ktri_get0_algs(
        ri: *mut CMS_RecipientInfo,
        pk: *mut *mut sys::EVP_PKEY,
        recip: *mut *mut sys::X509,
        palg: *mut *mut sys::X509_ALGOR,
    ) -> c_int;
    fn CMS_get0_SignerInfos(cms: *mut sys::CMS_ContentInfo) -> *mut sys::OPENSSL_STACK;
    fn CMS_set1_signers_certs(
        cms: *mut sys::CMS_ContentInfo,
        certs: *mut sys::stack_st_X509,
        flags: c_uint,
    ) -> c_int;
    fn CMS_SignerInfo_get0_algs(
        si: *mut CMS_SignerInfo,
        pk: *mut *mut sys::EVP_PKEY,
        signer: *mut *mut sys::X509,
        pdig: *mut *mut sys::X509_ALGOR,
        psig: *mut *mut sys::X509_ALGOR,
    );
    fn CMS_signed_get_attr_count(si: *const CMS_SignerInfo) -> c_int;
    fn CMS_signed_add1_attr_by_NID(
        si: *mut CMS_SignerInfo,
        nid: c_int,
        kind: c_int,
        bytes: *const c_void,
        len: c_int,
    ) -> c_int;
    fn CMS_SignerInfo_verify(si: *mut CMS_SignerInfo) -> c_int;
    fn CMS_dataInit(cms: *mut sys::CMS_ContentInfo, icont: *mut sys::BIO) -> *mut sys::BIO;
    fn CMS_SignerInfo_verify_content(si: *mut CMS_SignerInfo, chain: *mut sys::BIO) -> c_int;
    fn CMS_get1_certs(cms: *mut sys::CMS_ContentInfo) -> *mut sys::stack_st_X509;
    fn CMS_get0_type(cms: *const sys::CMS_ContentInfo) -> *const sys::ASN1_OBJECT;
    fn i2d_X509_ALGOR(a: *const sys::X509_ALGOR, pp: *mut *mut u8) -> c_int;
    fn BIO_pop(b: *mut sys::BIO) -> *mut sys::BIO;
    fn BIO_free(b: *mut sys::BIO) -> c_int;
    fn i2d_CMS_bio_stream(
        out: *mut sys::BIO,
        cms: *mut sys::CMS_ContentInfo,
        data: *mut sys::BIO,
        flags: c_int,
    ) -> c_int;
}

const CMS_RECIPINFO_TRANS: c_int = 0;

/// A memory BIO over a borrowed byte slice, freed on drop.
struct ReadBio<'a> {
    bio: *mut sys::BIO,
    _data: std::marker::PhantomData<&'a [u8]>,
}

impl<'a> ReadBio<'a> {
    fn new(data: &'a [u8]) -> Result<Self, ErrorStack> {
        let len = c_int::try_from(data.len()).map_err(|_| too_large())?;
        // SAFETY: BIO_new_mem_buf reads `len` bytes from `data`, which outlives the BIO (the
        // PhantomData ties the BIO's lifetime to the slice). A null return is an error.
        let bio = unsafe { sys::BIO_new_mem_buf(data.as_ptr() as *const c_void, len) };
        if bio.is_null() {
            return Err(ErrorStack::get());
        }
        Ok(ReadBio {
            bio,
            _data: std::marker::PhantomData,
        })
    }
}

impl Drop for ReadBio<'_> {
    fn drop(&mut self) {
        // SAFETY: `bio` came from BIO_new_mem_buf and is freed exactly once, here.
        unsafe {
            BIO_free(self.bio);
        }
    }
}

/// What a [`VecBio`] appends to: its `Vec`, and, for base64 output, the line encoder.
struct VecBioState {
    out: Vec<u8>,
    base64: Option<Base64Lines>,
}

/// A write-only BIO that appends to a Rust `Vec`, so OpenSSL's output (a decrypted 20 MiB message)
/// lands in its final buffer once instead of in a memory BIO and then a copy. In base64 mode it
/// appends CRLF base64 lines instead: an encrypted message goes straight to its MIME text.
struct VecBio {
    bio: *mut sys::BIO,
    method: *mut sys::BIO_METHOD,
    // Boxed so its address stays put while the VecBio value moves: OpenSSL holds the pointer.
    state: Box<VecBioState>,
}

unsafe extern "C" fn vec_bio_write(
    b: *mut sys::BIO,
    data: *const std::ffi::c_char,
    len: c_int,
) -> c_int {
    if len <= 0 || data.is_null() {
        return 0;
    }
    // SAFETY: the data pointer was set by VecBio::new to its boxed state, which outlives the BIO;
    // OpenSSL passes `len` readable bytes at `data`.
    unsafe {
        let state = sys::BIO_get_data(b) as *mut VecBioState;
        if state.is_null() {
            return -1;
        }
        let state = &mut *state;
        let bytes = std::slice::from_raw_parts(data as *const u8, len as usize);
        match state.base64.as_mut() {
            Some(enc) => enc.push(&mut state.out, bytes),
            None => state.out.extend_from_slice(bytes),
        }
    }
    len
}

unsafe extern "C" fn vec_bio_ctrl(
    _b: *mut sys::BIO,
    cmd: c_int,
    _num: std::ffi::c_long,
    _ptr: *mut c_void,
) -> std::ffi::c_long {
    // Flush succeeds (there is nothing to flush); every other control is unsupported.
    if cmd == sys::BIO_CTRL_FLUSH { 1 } else { 0 }
}

unsafe extern "C" fn vec_bio_create(b: *mut sys::BIO) -> c_int {
    // SAFETY: `b` is the BIO being created by BIO_new.
    unsafe { sys::BIO_set_init(b, 1) };
    1
}

unsafe extern "C" fn vec_bio_destroy(_b: *mut sys::BIO) -> c_int {
    1
}

impl VecBio {
    fn with_capacity(capacity: usize) -> Result<Self, ErrorStack> {
        Self::new(Vec::with_capacity(capacity), None)
    }

    /// Append base64 lines of what OpenSSL writes to `out`.
    fn base64_onto(out: Vec<u8>) -> Result<Self, ErrorStack> {
        Self::new(out, Some(Base64Lines::default()))
    }

    fn new(out: Vec<u8>, base64: Option<Base64Lines>) -> Result<Self, ErrorStack> {
        // SAFETY: a fresh method table and BIO, owned by the returned value and freed in Drop;
        // the data pointer is the boxed state, whose address is stable for the BIO's life.
        unsafe {
            let method = sys::BIO_meth_new(sys::BIO_TYPE_NONE, c"direct-agent vec".as_ptr());
            if method.is_null() {
                return Err(ErrorStack::get());
            }
            sys::BIO_meth_set_write__fixed_rust(method, Some(vec_bio_write));
            sys::BIO_meth_set_ctrl__fixed_rust(method, Some(vec_bio_ctrl));
            sys::BIO_meth_set_create__fixed_rust(method, Some(vec_bio_create));
            sys::BIO_meth_set_destroy__fixed_rust(method, Some(vec_bio_destroy));
            let bio = sys::BIO_new(method);
            if bio.is_null() {
                sys::BIO_meth_free(method);
                return Err(ErrorStack::get());
            }
            let mut state = Box::new(VecBioState { out, base64 });
            sys::BIO_set_data(bio, &mut *state as *mut VecBioState as *mut c_void);
            Ok(VecBio { bio, method, state })
        }
    }

    /// The output, with a base64 encoder's last line written.
    fn into_vec(mut self) -> Vec<u8> {
        let state = &mut *self.state;
        if let Some(enc) = state.base64.as_mut() {
            enc.finish(&mut state.out);
        }
        std::mem::take(&mut state.out)
    }
}

impl Drop for VecBio {
    fn drop(&mut self) {
        // SAFETY: both were created in VecBio::new and are freed exactly once, the BIO first.
        unsafe {
            BIO_free(self.bio);
            sys::BIO_meth_free(self.method);
        }
    }
}

/// Decrypt with `key` for the recipient `cert`, writing the content straight into a `Vec` sized
/// for `expected_len` bytes (the ciphertext's length is a good guess). `detached` is the
/// ciphertext when `cms` was parsed without it (see [`super::ber`]).
pub fn decrypt(
    cms: &CmsContentInfoRef,
    key: &PKeyRef<Private>,
    cert: &X509Ref,
    expected_len: usize,
    detached: Option<&[u8]>,
) -> Result<Vec<u8>, ErrorStack> {
    let dcont = match detached {
        Some(d) => Some(ReadBio::new(d)?),
        None => None,
    };
    let out = VecBio::with_capacity(expected_len)?;
    // SAFETY: all pointers are live for the call; the output BIO only appends to its Vec; the
    // detached content BIO is only read, and CMS_decrypt leaves it for its owner to free.
    unsafe {
        check(sys::CMS_decrypt(
            cms.as_ptr(),
            key.as_ptr(),
            cert.as_ptr(),
            dcont.as_ref().map_or(ptr::null_mut(), |b| b.bio),
            out.bio,
            0,
        ))?;
    }
    Ok(out.into_vec())
}

fn too_large() -> ErrorStack {
    // An ErrorStack cannot be built from a message; an empty stack is the closest honest value.
    // Callers check sizes before this (the SMTP size limit is far below 2 GiB).
    ErrorStack::get()
}

fn check(ret: c_int) -> Result<(), ErrorStack> {
    if ret <= 0 {
        Err(ErrorStack::get())
    } else {
        Ok(())
    }
}

/// The SMIMECapabilities attribute value (RFC 8551 2.5.2) our signatures carry: the content
/// ciphers we open, most preferred first. OpenSSL's standard list (AES-256/192/128-CBC, then
/// 3DES, RC2 and GOST where a provider has them) would announce 3DES, which the opener refuses;
/// this one names AES-256/192/128-CBC in OpenSSL's order, then AES-256/128-GCM (RFC 5084: no
/// parameters). Encoded once here rather than fetched and encoded by OpenSSL for every message.
pub(crate) const SMIME_CAPABILITIES: [u8; 67] = {
    const fn aes(last: u8) -> [u8; 13] {
        // SEQUENCE { OID 2.16.840.1.101.3.4.1.<last> }
        [
            0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, last,
        ]
    }
    let caps = [aes(42), aes(22), aes(2), aes(46), aes(6)];
    let mut out = [0u8; 67];
    out[0] = 0x30;
    out[1] = 65;
    let mut i = 0;
    while i < caps.len() {
        let mut j = 0;
        while j < 13 {
            out[2 + i * 13 + j] = caps[i][j];
            j += 1;
        }
        i += 1;
    }
    out
};

/// Produce a detached CMS SignedData (DER) over `content`, with one signer using `digest`, the
/// signer's certificate and `chain` included, and the default signed attributes.
pub fn sign_detached(
    content: &[u8],
    cert: &X509Ref,
    key: &PKeyRef<Private>,
    chain: &[X509],
    digest: MessageDigest,
) -> Result<Vec<u8>, ErrorStack> {
    let flags = sys::CMS_DETACHED | sys::CMS_BINARY | sys::CMS_PARTIAL;
    let data = ReadBio::new(content)?;
    // SAFETY: CMS_sign with null signer/key and CMS_PARTIAL returns a fresh, owned structure (or
    // null on error); ownership passes to CmsContentInfo, which frees it.
    let cms = unsafe {
        let p = sys::CMS_sign(
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            flags,
        );
        if p.is_null() {
            return Err(ErrorStack::get());
        }
        openssl::cms::CmsContentInfo::from_ptr(p)
    };
    // SAFETY: all pointers are live borrows for the duration of the calls; CMS_add1_signer and
    // CMS_add1_cert take their own references (up-ref) on the certificate and key.
    unsafe {
        let si = CMS_add1_signer(
            cms.as_ptr(),
            cert.as_ptr(),
            key.as_ptr(),
            digest.as_ptr(),
            sys::CMS_NOSMIMECAP,
        );
        if si.is_null() {
            return Err(ErrorStack::get());
        }
        // What CMS_add_smimecap would add, with our list (the attribute value is copied).
        check(CMS_signed_add1_attr_by_NID(
            si,
            sys::NID_SMIMECapabilities,
            sys::V_ASN1_SEQUENCE,
            SMIME_CAPABILITIES.as_ptr().cast(),
            SMIME_CAPABILITIES.len() as c_int,
        ))?;
        for c in chain {
            check(CMS_add1_cert(cms.as_ptr(), c.as_ptr()))?;
        }
        check(CMS_final(cms.as_ptr(), data.bio, ptr::null_mut(), flags))?;
    }
    cms.to_der()
}

/// RSA key transport choice for one recipient.
#[derive(Clone, Copy)]
pub enum RsaTransport {
    Pkcs1,
    Oaep(MessageDigest),
}

/// Encrypt `content` to every certificate in `recipients` as a CMS EnvelopedData (or
/// AuthEnvelopedData for an AEAD `cipher`), streamed: OpenSSL encrypts as it reads and writes
/// indefinite-length BER, which is appended to `out` as CRLF base64 lines. No copy of the
/// ciphertext is ever held. RSA recipients use `transport`; other key types use OpenSSL's default.
pub fn encrypt_to_base64(
    content: &[u8],
    recipients: &[X509],
    cipher: Cipher,
    transport: RsaTransport,
    out: Vec<u8>,
) -> Result<Vec<u8>, ErrorStack> {
    let flags = sys::CMS_BINARY | sys::CMS_PARTIAL | sys::CMS_STREAM;
    // SAFETY: with CMS_PARTIAL and no recipients, CMS_encrypt returns a fresh owned structure (or
    // null); a null certificate stack is allowed (it adds no recipients).
    let cms = unsafe {
        let p = sys::CMS_encrypt(ptr::null_mut(), ptr::null_mut(), cipher.as_ptr(), flags);
        if p.is_null() {
            return Err(ErrorStack::get());
        }
        openssl::cms::CmsContentInfo::from_ptr(p)
    };
    for cert in recipients {
        // SAFETY: cms and cert are live; the RecipientInfo and its EVP_PKEY_CTX are owned by cms
        // and only borrowed here while cms is alive.
        unsafe {
            let ri = CMS_add1_recipient_cert(cms.as_ptr(), cert.as_ptr(), sys::CMS_KEY_PARAM);
            if ri.is_null() {
                return Err(ErrorStack::get());
            }
            let is_rsa = cert.public_key()?.rsa().is_ok();
            if is_rsa && CMS_RecipientInfo_type(ri) == CMS_RECIPINFO_TRANS {
                let pctx = CMS_RecipientInfo_get0_pkey_ctx(ri);
                if pctx.is_null() {
                    return Err(ErrorStack::get());
                }
                let ctx = PkeyCtxRef::<openssl::pkey::Public>::from_ptr_mut(pctx);
                match transport {
                    RsaTransport::Pkcs1 => ctx.set_rsa_padding(Padding::PKCS1)?,
                    RsaTransport::Oaep(md) => {
                        ctx.set_rsa_padding(Padding::PKCS1_OAEP)?;
                        ctx.set_rsa_oaep_md(md_ref(md))?;
                        ctx.set_rsa_mgf1_md(md_ref(md))?;
                    }
                }
            }
        }
    }
    let data = ReadBio::new(content)?;
    let sink = VecBio::base64_onto(out)?;
    // SAFETY: cms and both BIOs are live for the call; OpenSSL pushes its own streaming BIOs in
    // front of `sink` and frees them before returning, leaving `sink` and `data` to their owners.
    unsafe {
        check(i2d_CMS_bio_stream(
            sink.bio,
            cms.as_ptr(),
            data.bio,
            flags as c_int,
        ))?;
    }
    Ok(sink.into_vec())
}

fn md_ref(md: MessageDigest) -> &'static openssl::md::MdRef {
    match md.type_() {
        Nid::SHA1 => openssl::md::Md::sha1(),
        Nid::SHA384 => openssl::md::Md::sha384(),
        Nid::SHA512 => openssl::md::Md::sha512(),
        _ => openssl::md::Md::sha256(),
    }
}

/// The ASN.1 type (`V_ASN1_UTCTIME` or `V_ASN1_GENERALIZEDTIME`) and encoded characters of a
/// time ("YYMMDDHHMMSSZ", "YYYYMMDDHHMMSSZ", or whatever a lax encoder wrote).
pub fn asn1_time_text(t: &openssl::asn1::Asn1TimeRef) -> (c_int, &[u8]) {
    // SAFETY: an ASN1_TIME is an ASN1_STRING; its type, data pointer and length describe bytes
    // owned by `t`, which the returned slice borrows.
    unsafe {
        let s = t.as_ptr() as *const sys::ASN1_STRING;
        let kind = sys::ASN1_STRING_type(s);
        let data = sys::ASN1_STRING_get0_data(s);
        let len = usize::try_from(sys::ASN1_STRING_length(s)).unwrap_or(0);
        if data.is_null() || len == 0 {
            return (kind, b"");
        }
        (kind, std::slice::from_raw_parts(data, len))
    }
}

/// The outer content type of a parsed CMS structure.
pub fn content_type(cms: &CmsContentInfoRef) -> Nid {
    // SAFETY: CMS_get0_type returns an internal pointer valid while cms lives (or null).
    unsafe {
        let obj = CMS_get0_type(cms.as_ptr());
        if obj.is_null() {
            return Nid::UNDEF;
        }
        Nid::from_raw(sys::OBJ_obj2nid(obj))
    }
}

/// The DER of the keyEncryptionAlgorithm of the KeyTransRecipientInfo addressed to `cert`, if any.
pub fn key_transport_algorithm(cms: &CmsContentInfoRef, cert: &X509Ref) -> Option<Vec<u8>> {
    // SAFETY: the stack and its RecipientInfos are owned by cms, which outlives this function's
    // use of them; X509_ALGOR pointers are internal and only encoded, never freed here.
    unsafe {
        let ris = CMS_get0_RecipientInfos(cms.as_ptr());
        if ris.is_null() {
            return None;
        }
        for i in 0..sys::OPENSSL_sk_num(ris) {
            let ri = sys::OPENSSL_sk_value(ris, i) as *mut CMS_RecipientInfo;
            if ri.is_null() || CMS_RecipientInfo_type(ri) != CMS_RECIPINFO_TRANS {
                continue;
            }
            if CMS_RecipientInfo_ktri_cert_cmp(ri, cert.as_ptr()) != 0 {
                continue;
            }
            let mut alg: *mut sys::X509_ALGOR = ptr::null_mut();
            if CMS_RecipientInfo_ktri_get0_algs(ri, ptr::null_mut(), ptr::null_mut(), &mut alg) <= 0
                || alg.is_null()
            {
                return None;
            }
            return algor_der(alg);
        }
        None
    }
}

/// # Safety
/// `alg` must point to a live X509_ALGOR.
unsafe fn algor_der(alg: *const sys::X509_ALGOR) -> Option<Vec<u8>> {
    // SAFETY: the caller guarantees `alg` is live; the first call only measures, the second
    // writes exactly `len` bytes into a buffer of that size.
    unsafe {
        let len = i2d_X509_ALGOR(alg, ptr::null_mut());
        if len <= 0 {
            return None;
        }
        let mut buf = vec![0u8; len as usize];
        let mut p = buf.as_mut_ptr();
        if i2d_X509_ALGOR(alg, &mut p) != len {
            return None;
        }
        Some(buf)
    }
}

/// What OpenSSL found for one SignerInfo.
pub struct SignerOutcome {
    /// The signer's certificate, when the message carried it.
    pub cert: Option<X509>,
    /// DER of the digestAlgorithm.
    pub digest_alg: Option<Vec<u8>>,
    /// Whether the signature and the message digest both verified.
    pub signature_valid: bool,
    /// OpenSSL's reason when it did not.
    pub failure: Option<String>,
}

/// The result of checking every SignerInfo of a SignedData.
pub struct SignedContent {
    pub signers: Vec<SignerOutcome>,
    /// The encapsulated content (empty for a detached signature: the caller has that content).
    pub content: Vec<u8>,
    /// Every certificate the SignedData carried (signers and intermediates).
    pub certs: Vec<X509>,
}

/// Verify each SignerInfo's signature and message digest on its own. No certificate path is
/// checked here: trust is decided by the caller for each signer that verified.
///
/// `supplied` are the SignedData's certificates when the caller took them out before parsing
/// (see [`super::ber::detach_certificates`]); signers are then looked up among them.
pub fn verify_signers(
    cms: &CmsContentInfoRef,
    detached: Option<&[u8]>,
    supplied: Option<&[X509]>,
) -> Result<SignedContent, ErrorStack> {
    let dcont = match detached {
        Some(d) => Some(ReadBio::new(d)?),
        None => None,
    };
    // SAFETY: every pointer used below is owned by `cms` (signer infos, algorithms, certs) or by
    // this function (the BIO chain, freed before return; the certificate stack, wrapped in an
    // owning Stack). Certificates borrowed from signer infos are up-ref'd via to_owned().
    unsafe {
        let mut stack = None;
        let certs: Vec<X509> = match supplied {
            Some(list) => {
                let mut st = Stack::<X509>::new()?;
                for c in list {
                    st.push(c.clone())?;
                }
                stack = Some(st);
                list.to_vec()
            }
            None => {
                let certs_stack = CMS_get1_certs(cms.as_ptr());
                if certs_stack.is_null() {
                    Vec::new()
                } else {
                    let owned = Stack::<X509>::from_ptr(certs_stack);
                    owned.iter().map(|c| c.to_owned()).collect()
                }
            }
        };
        // Associate each SignerInfo with its certificate: from the supplied set, else from the
        // message's own (flags 0). CMS_set1_signers_certs takes its own references. A return
        // below zero is an error; zero or more signers found is fine.
        let supplied_ptr = stack.as_ref().map_or(ptr::null_mut(), |st| st.as_ptr());
        CMS_set1_signers_certs(cms.as_ptr(), supplied_ptr, 0);
        sys::ERR_clear_error();

        let sis = CMS_get0_SignerInfos(cms.as_ptr());
        if sis.is_null() {
            return Err(ErrorStack::get());
        }
        let count = sys::OPENSSL_sk_num(sis).max(0);
        let mut signers = Vec::with_capacity(count as usize);
        for i in 0..count {
            let si = sys::OPENSSL_sk_value(sis, i) as *mut CMS_SignerInfo;
            let mut signer: *mut sys::X509 = ptr::null_mut();
            let mut dig: *mut sys::X509_ALGOR = ptr::null_mut();
            let mut sig: *mut sys::X509_ALGOR = ptr::null_mut();
            CMS_SignerInfo_get0_algs(si, ptr::null_mut(), &mut signer, &mut dig, &mut sig);
            let cert = if signer.is_null() {
                None
            } else {
                Some(X509Ref::from_ptr(signer).to_owned())
            };
            let mut outcome = SignerOutcome {
                cert,
                digest_alg: if dig.is_null() { None } else { algor_der(dig) },
                signature_valid: false,
                failure: None,
            };
            if outcome.cert.is_none() {
                outcome.failure = Some("the signer's certificate is not in the message".into());
            } else if CMS_signed_get_attr_count(si) >= 0 && CMS_SignerInfo_verify(si) <= 0 {
                outcome.failure = Some(format!(
                    "signature over the signed attributes does not verify ({})",
                    ErrorStack::get()
                ));
            }
            signers.push(outcome);
        }

        // Digest the content once through OpenSSL's digest BIO chain, then check every signer's
        // messageDigest (or, without signed attributes, its signature) against it.
        let icont = dcont.as_ref().map_or(ptr::null_mut(), |b| b.bio);
        let chain = CMS_dataInit(cms.as_ptr(), icont);
        if chain.is_null() {
            return Err(ErrorStack::get());
        }
        let mut content = Vec::new();
        let mut buf = [0u8; 16384];
        let read_failed;
        loop {
            let n = sys::BIO_read(chain, buf.as_mut_ptr() as *mut c_void, buf.len() as c_int);
            if n > 0 {
                // Detached content is the caller's already; only encapsulated content is kept.
                if dcont.is_none() {
                    content.extend_from_slice(&buf[..n as usize]);
                }
            } else {
                // Memory BIOs return 0 at the end of the data; below zero is a digest failure.
                read_failed = n < 0;
                break;
            }
        }
        if !read_failed {
            for (i, outcome) in signers.iter_mut().enumerate() {
                if outcome.failure.is_some() {
                    continue;
                }
                let si = sys::OPENSSL_sk_value(sis, i as c_int) as *mut CMS_SignerInfo;
                if CMS_SignerInfo_verify_content(si, chain) > 0 {
                    outcome.signature_valid = true;
                } else {
                    outcome.failure = Some(format!(
                        "the signed content does not match the signature: it was altered ({})",
                        ErrorStack::get()
                    ));
                }
            }
        }
        // Free the digest BIOs CMS_dataInit pushed, but not our own content BIO (freed by Drop).
        let mut b = chain;
        match dcont.as_ref() {
            Some(d) => {
                while !b.is_null() && b != d.bio {
                    let next = BIO_pop(b);
                    BIO_free(b);
                    b = next;
                }
            }
            None => sys::BIO_free_all(b),
        }
        if read_failed {
            return Err(ErrorStack::get());
        }
        Ok(SignedContent {
            signers,
            content,
            certs,
        })
    }
}
