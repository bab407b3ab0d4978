package metadata

import (
	"testing"
)

// instanceData returns a minimal instance-data.json naming a cloud.
func instanceDataJSON(cloudName, platform string) string {
	return `{"v1": {"cloud_name": "` + cloudName + `", "platform": "` + platform + `"}, "ds": {}}`
}

func TestDetect(t *testing.T) {
	const ci = "run/cloud-init/instance-data.json"
	dmi := func(field string) string { return "sys/class/dmi/id/" + field }

	tests := []struct {
		name     string
		files    map[string]string
		provider string
		how      string
	}{
		{"nothing", nil, "", ""},
		{"unknown_dmi", map[string]string{dmi("sys_vendor"): "QEMU\n"}, "", ""},
		{"gce_product", map[string]string{dmi("product_name"): "Google Compute Engine\n"},
			GCE, `DMI product_name "Google Compute Engine"`},
		{"gce_vendor", map[string]string{dmi("sys_vendor"): "Google"},
			GCE, `DMI sys_vendor "Google"`},
		{"gce_serial", map[string]string{dmi("product_serial"): "GoogleCloud-0A1B2C"},
			GCE, `DMI product_serial "GoogleCloud-0A1B2C"`},
		{"yandex", map[string]string{dmi("sys_vendor"): "Yandex\n"},
			Yandex, `DMI sys_vendor "Yandex"`},
		{"aws_nitro", map[string]string{dmi("sys_vendor"): "Amazon EC2"},
			AWS, `DMI sys_vendor "Amazon EC2"`},
		{"aws_xen_bios", map[string]string{dmi("bios_version"): "4.11.amazon"},
			AWS, `DMI bios_version "4.11.amazon"`},
		{"aws_xen_hypervisor", map[string]string{"sys/hypervisor/uuid": "ec2e1916-9099-7caf"},
			AWS, `/sys/hypervisor/uuid "ec2e1916-9099-7caf"`},
		{"azure", map[string]string{dmi("chassis_asset_tag"): azureAssetTag + "\n",
			dmi("sys_vendor"): "Microsoft Corporation"},
			Azure, `DMI chassis_asset_tag "` + azureAssetTag + `"`},
		{"openstack_product", map[string]string{dmi("product_name"): "OpenStack Nova"},
			OpenStack, `DMI product_name "OpenStack Nova"`},
		{"openstack_vendor", map[string]string{dmi("sys_vendor"): "OpenStack Foundation"},
			OpenStack, `DMI sys_vendor "OpenStack Foundation"`},
		{"openstack_asset_tag", map[string]string{dmi("chassis_asset_tag"): "OpenTelekomCloud"},
			OpenStack, `DMI chassis_asset_tag "OpenTelekomCloud"`},
		{"cloud_init_gce", map[string]string{ci: instanceDataJSON("gce", "gce")},
			GCE, `/run/cloud-init/instance-data.json v1.cloud_name "gce"`},
		{"cloud_init_aws", map[string]string{ci: instanceDataJSON("aws", "ec2")},
			AWS, `/run/cloud-init/instance-data.json v1.cloud_name "aws"`},
		{"cloud_init_azure", map[string]string{ci: instanceDataJSON("azure", "azure")},
			Azure, `/run/cloud-init/instance-data.json v1.cloud_name "azure"`},
		{"cloud_init_configdrive", map[string]string{ci: instanceDataJSON("configdrive", "openstack")},
			OpenStack, `/run/cloud-init/instance-data.json v1.cloud_name "configdrive"`},
		{"cloud_init_openstack_platform", map[string]string{ci: instanceDataJSON("mycloud", "openstack")},
			OpenStack, `/run/cloud-init/instance-data.json v1.platform "openstack"`},
		{"cloud_init_before_dmi", map[string]string{
			ci: instanceDataJSON("aws", "ec2"), dmi("product_name"): "OpenStack Nova"},
			AWS, `/run/cloud-init/instance-data.json v1.cloud_name "aws"`},
		// cloud-init has no Yandex datasource; its EC2 guess there is a stand-in.
		{"yandex_over_cloud_init", map[string]string{
			ci: instanceDataJSON("aws", "ec2"), dmi("sys_vendor"): "Yandex"},
			Yandex, `DMI sys_vendor "Yandex"`},
		// A cloud with no provider of its own: DMI first, then the file.
		{"nocloud_on_gce", map[string]string{
			ci: instanceDataJSON("nocloud", "nocloud"), dmi("product_name"): "Google"},
			GCE, `DMI product_name "Google"`},
		{"nocloud", map[string]string{ci: instanceDataJSON("nocloud", "nocloud")},
			CloudInit, `/run/cloud-init/instance-data.json names no cloud with a metadata ` +
				`provider of its own (cloud_name "nocloud")`},
		{"malformed_cloud_init_then_dmi", map[string]string{
			ci: "{", dmi("sys_vendor"): "Amazon EC2"},
			AWS, `DMI sys_vendor "Amazon EC2"`},
		{"config_drive", map[string]string{
			"mnt/config/openstack/latest/meta_data.json": "{}"},
			OpenStack, "config drive at /mnt/config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			for rel, content := range tt.files {
				writeFile(t, root, rel, content)
			}

			provider, how := Detect(root)
			if provider != tt.provider || how != tt.how {
				t.Errorf("Detect = %q, %q\nwant       %q, %q", provider, how, tt.provider, tt.how)
			}
		})
	}
}
